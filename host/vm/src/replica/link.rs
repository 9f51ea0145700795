//! The active host's side of a replicated disk: its link to the replica the
//! passive host serves ([`super::ReplicaServer`]).
//!
//! A replicated disk is a quorum node with a vote threshold of 2 (see
//! [`crate::spec::DiskSpec`]): a guest write completes only when both of
//! its children took it. At launch the second child is a placeholder that
//! takes every write, so the disk works alone. [`attach`] brings the
//! replica in step (a write-blocking mirror, then a pause of a few
//! milliseconds) and puts it in the placeholder's place. From then on:
//!
//! - every write the guest saw complete is on the replica too (a flush
//!   reaches the passive host's image file as well);
//! - when the replica fails (the passive host died, the link is cut), the
//!   write fails, and the device's `werror=stop` pauses the guest with that
//!   write pending (`BLOCK_IO_ERROR`, run state `io-error`). The guest has
//!   no completed write the replica lacks. The caller records that the
//!   replica is outdated *before* [`detach`] puts the placeholder back and
//!   the guest goes on alone (`cont` retries the pending write).
//!
//! Without the quorum, a write-blocking mirror alone does not give this:
//! when its target fails, the guest's write completes on the local copy
//! and only the job ends (`host/vm/tests/migration.rs`).

use std::future::Future;
use std::time::Duration;

use crate::migration::{MigrateError, MirrorProgress, MirrorSet, MirrorTarget, REPLICA_PREFIX};
use crate::qmp::{InetAddr, QmpClient, QmpError, TlsClient};

/// How long the guest may stay paused while the mirrors end in step.
const FINISH_WAIT: Duration = Duration::from_secs(30);

/// How long a replica may leave a write or a flush unanswered before its
/// connection is given up (`TCP_USER_TIMEOUT` on the socket QEMU gets):
/// the write then fails, the guest is held on it, and the caller records
/// the replica outdated. Without it, a passive host that lost power or a
/// cut link would hold the guest for TCP's retransmissions, about 15
/// minutes.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long QEMU may take to open its NBD connection to a replica (the
/// handshake, over the socket nasvisord handed it). QEMU opens it in its
/// main loop: a server that does not answer (stopped, hung) would hold the
/// loop, and the guest with it, for ever. After this long the socket is
/// shut down, which fails the open.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// Runs `op` (QEMU opening an NBD node on socket `fd`), shutting `fd` down
/// if it has not ended within [`OPEN_WAIT`].
pub(super) async fn bounded_open<T>(
    fd: &std::os::fd::OwnedFd,
    disk: &str,
    op: impl Future<Output = T>,
) -> T {
    tokio::pin!(op);
    tokio::select! {
        r = &mut op => r,
        _ = tokio::time::sleep(OPEN_WAIT) => {
            tracing::warn!(disk, "the replica server did not answer QEMU's connection within {OPEN_WAIT:?}; its socket is shut down");
            if let Err(e) = rustix::net::shutdown(fd, rustix::net::Shutdown::Both) {
                tracing::warn!(disk, error = %e, "shutting down a replica's socket");
            }
            op.await
        }
    }
}

/// How long connecting to a replica server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `addr` whose unanswered data is given up after
/// [`IO_TIMEOUT`], and whose silence is probed every second, to hand to
/// QEMU.
async fn connect_bounded(addr: &InetAddr) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::net::sockopt;
    let port: u16 = addr.port;
    let s = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((addr.host.as_str(), port)),
    )
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {CONNECT_TIMEOUT:?}"),
        )
    })??;
    let s = s.into_std()?;
    // QEMU drives the socket; it starts out blocking, as one QEMU
    // connects itself does.
    s.set_nonblocking(false)?;
    let ms = u32::try_from(IO_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(&s, ms)?;
    sockopt::set_socket_keepalive(&s, true)?;
    sockopt::set_tcp_keepidle(&s, Duration::from_secs(1))?;
    sockopt::set_tcp_keepintvl(&s, Duration::from_secs(1))?;
    sockopt::set_tcp_keepcnt(&s, IO_TIMEOUT.as_secs().max(1) as u32)?;
    Ok(s.into())
}

/// nasvisord's own copies of the sockets QEMU's replica nodes use: the
/// kill switch of a replica that stopped answering without closing its
/// connection (a stopped or hung server, whose kernel still acknowledges
/// the bytes, so that no TCP timeout applies). [`Sockets::cut`] shuts them
/// down for QEMU too: its requests in flight fail, the guest's write fails
/// on the replica and the guest is held, as when a link is cut.
#[derive(Debug, Default)]
pub struct Sockets(Vec<(String, std::os::fd::OwnedFd)>);

impl From<Vec<(String, std::os::fd::OwnedFd)>> for Sockets {
    fn from(v: Vec<(String, std::os::fd::OwnedFd)>) -> Self {
        Sockets(v)
    }
}

impl Sockets {
    /// Shuts every socket down (both directions), for QEMU as well.
    pub fn cut(&self) {
        for (disk, fd) in &self.0 {
            if let Err(e) = rustix::net::shutdown(fd, rustix::net::Shutdown::Both) {
                tracing::warn!(disk, error = %e, "shutting down a replica's socket");
            }
        }
    }

    /// The disks whose sockets these are.
    pub fn disks(&self) -> Vec<String> {
        self.0.iter().map(|(d, _)| d.clone()).collect()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Finds again the sockets QEMU process `pid` holds to the replica
    /// server at `addr` (after a restart of nasvisord, which lost its own
    /// copies): every TCP socket among the process's descriptors whose peer
    /// is `addr` (`/proc/<pid>/net/tcp*`, `/proc/<pid>/fd`), duplicated out
    /// of QEMU with `pidfd_getfd(2)`. They are named `socket<n>`: which
    /// disk each serves does not matter to a cut.
    pub fn recover(pid: i32, addr: &InetAddr) -> std::io::Result<Sockets> {
        use std::io::{Error, ErrorKind};
        let ip: std::net::IpAddr = addr
            .host
            .parse()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{}: {e}", addr.host)))?;
        let inodes = peer_inodes(pid, std::net::SocketAddr::new(ip, addr.port))?;
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid)
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "invalid pid"))?,
            rustix::process::PidfdFlags::empty(),
        )?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let inode = link
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if !inode.is_some_and(|i| inodes.contains(&i)) {
                continue;
            }
            let Some(target) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let fd = rustix::process::pidfd_getfd(
                &pidfd,
                target,
                rustix::process::PidfdGetfdFlags::empty(),
            )?;
            found.push((format!("socket{}", found.len()), fd));
        }
        Ok(Sockets(found))
    }
}

/// The inodes of the TCP sockets in process `pid`'s network namespace whose
/// peer is `peer`.
fn peer_inodes(pid: i32, peer: std::net::SocketAddr) -> std::io::Result<Vec<u64>> {
    let (table, want) = match peer {
        std::net::SocketAddr::V4(a) => (
            "tcp",
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        std::net::SocketAddr::V6(a) => {
            let words: String = a
                .ip()
                .octets()
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            ("tcp6", format!("{words}:{:04X}", a.port()))
        }
    };
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(2) == Some(&want.as_str()))
                .then(|| f.get(9).and_then(|i| i.parse().ok()))
                .flatten()
        })
        .collect())
}

/// Connects to `t`'s replica server with a bounded socket (QEMU's own
/// connection would have no bound on a write the replica never answers)
/// and hands it to QEMU: the address to give its NBD node, the name of the
/// socket in QEMU, and nasvisord's copy of it (for [`Sockets`]).
pub(super) async fn hand_over(
    qmp: &QmpClient,
    t: &MirrorTarget,
) -> Result<(crate::qmp::SocketAddress, String, std::os::fd::OwnedFd), LinkError> {
    let fd = connect_bounded(&t.addr)
        .await
        .map_err(|source| LinkError::Connect {
            disk: t.node.clone(),
            addr: t.addr.to_string(),
            source,
        })?;
    let name = format!("{}-sock", replica_node(&t.node));
    use std::os::fd::AsFd as _;
    qmp.getfd(&name, fd.as_fd())
        .await
        .map_err(qmp_err(&t.node, "handing over the replica's socket"))?;
    Ok((
        crate::qmp::SocketAddress::Fd { name: name.clone() },
        name,
        fd,
    ))
}

/// Closes the socket named `name` that QEMU holds, when no node took it.
pub(super) async fn close_unused(qmp: &QmpClient, disk: &str, name: &str) {
    if let Err(e) = qmp.closefd(name).await {
        tracing::warn!(disk, error = %e, "closing the replica's socket");
    }
}

/// The placeholder child of replicated disk `node` (e.g. `disk0-alone`).
pub fn placeholder(node: &str) -> String {
    format!("{node}-alone")
}

/// The NBD client node of replicated disk `node`'s replica (`rep-disk0`).
pub fn replica_node(node: &str) -> String {
    format!("{REPLICA_PREFIX}{node}")
}

/// Errors of a replica link. Each names the disk.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The disk was not launched replicated.
    #[error("disk {disk} is not replicated (launched without `replicated`)")]
    NotReplicated { disk: String },
    /// The disk's replica is already a member of its quorum.
    #[error("disk {disk} already has its replica attached")]
    Attached { disk: String },
    /// The replica server could not be reached.
    #[error("disk {disk}: cannot reach its replica at {addr}: {source}")]
    Connect {
        disk: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Bringing the replica in step failed.
    #[error("the replicas could not be brought in step: {0}")]
    Sync(#[source] MigrateError),
    /// The disk has no record of the writes its replica missed, so only a
    /// full copy can bring the replica in step.
    #[error("disk {disk} has no record of the writes its replica missed: it needs a full copy")]
    Untracked { disk: String },
    /// Copying the writes the replica missed failed.
    #[error("disk {disk}: copying the writes its replica missed failed: {reason}")]
    Resync { disk: String, reason: String },
    /// A QMP command failed.
    #[error("disk {disk}: {what}: {source}")]
    Qmp {
        disk: String,
        what: String,
        #[source]
        source: QmpError,
    },
}

pub(super) fn qmp_err(disk: &str, what: &str) -> impl FnOnce(QmpError) -> LinkError {
    let (disk, what) = (disk.to_string(), what.to_string());
    move |source| LinkError::Qmp { disk, what, source }
}

/// Where a replicated disk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The disk works alone: its second child is the placeholder.
    Alone,
    /// Its replica is a member of its quorum: writes complete on both.
    Replicated,
}

/// Where replicated disk `node` stands (read from QEMU, so it holds after a
/// restart of nasvisord).
pub async fn state(qmp: &QmpClient, node: &str) -> Result<LinkState, LinkError> {
    let children = qmp
        .node_children(node)
        .await
        .map_err(qmp_err(node, "reading its children"))?;
    let has = |n: &str| children.iter().any(|(_, c)| c == n);
    if has(&replica_node(node)) {
        Ok(LinkState::Replicated)
    } else if has(&placeholder(node)) {
        Ok(LinkState::Alone)
    } else {
        Err(LinkError::NotReplicated {
            disk: node.to_string(),
        })
    }
}

/// Brings each of `targets`' replicas in step with its disk (a
/// write-blocking mirror onto the passive host's export; `progress` hears
/// how far), then, with the guest paused for the swap, makes each replica
/// a member of its disk's quorum in the placeholder's place. The guest
/// runs on afterwards if it ran before. On failure every disk is left
/// alone, as before, and no node of the attempt is left. Returns the
/// replicas' [`Sockets`].
pub async fn attach(
    qmp: &QmpClient,
    targets: &[MirrorTarget],
    tls: Option<&TlsClient>,
    cancel: impl Future<Output = ()>,
    progress: impl FnMut(MirrorProgress),
) -> Result<Sockets, LinkError> {
    for t in targets {
        match state(qmp, &t.node).await? {
            LinkState::Alone => {}
            LinkState::Replicated => {
                return Err(LinkError::Attached {
                    disk: t.node.clone(),
                })
            }
        }
    }
    let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
    clear_leftovers(qmp, &nodes).await?;
    let mut mirrors = MirrorSet::replicas(qmp);
    let mut sockets = Sockets::default();
    let synced: Result<(), LinkError> = async {
        for t in targets {
            let (server, name, fd) = hand_over(qmp, t).await?;
            let added = bounded_open(&fd, &t.node, mirrors.add_over(t, server, tls)).await;
            if let Err(e) = added {
                close_unused(qmp, &t.node, &name).await;
                return Err(LinkError::Sync(e));
            }
            sockets.0.push((t.node.clone(), fd));
        }
        mirrors
            .wait_ready(cancel, progress)
            .await
            .map_err(LinkError::Sync)
    }
    .await;
    if let Err(e) = synced {
        mirrors.abort().await;
        return Err(e);
    }
    let running = qmp
        .query_status()
        .await
        .map_err(qmp_err(&targets[0].node, "query-status"))?
        .running;
    if running {
        if let Err(e) = qmp.stop().await {
            mirrors.abort().await;
            return Err(qmp_err(&targets[0].node, "pausing the guest for the swap")(
                e,
            ));
        }
    }
    let swapped = swap_in(qmp, &mut mirrors, targets).await;
    if swapped.is_err() {
        let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
        // Whatever got in goes out again; the placeholder takes its place.
        if let Err(e) = detach(qmp, &nodes).await {
            tracing::warn!(error = %e, "undoing a failed replica attach");
        }
        mirrors.abort().await;
    }
    if running {
        qmp.cont().await.map_err(qmp_err(
            &targets[0].node,
            "resuming the guest after the swap",
        ))?;
    }
    swapped?;
    // A record of writes a former replica missed means nothing now.
    let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
    super::resync::forget_changes(qmp, &nodes).await?;
    Ok(sockets)
}

/// Clears what an attach or a resume that did not end left of the replica
/// of each disk of `nodes` (alone): its block job (cancelled, dismissed),
/// its NBD node and the socket handed over for it. A nasvisord that died or
/// restarted in the middle leaves them in QEMU, and they would refuse the
/// next attempt (a job or node of the same name) for ever.
pub(super) async fn clear_leftovers(qmp: &QmpClient, nodes: &[String]) -> Result<(), LinkError> {
    for node in nodes {
        let rep = replica_node(node);
        let mut ended = false;
        // A job may end on its own between the query and the cancel (QEMU
        // then refuses the verb); only a refusal of a job that still runs
        // after it is an error.
        let mut refused = None;
        let until = std::time::Instant::now() + FINISH_WAIT;
        loop {
            let jobs = qmp
                .query_block_jobs()
                .await
                .map_err(qmp_err(node, "query-block-jobs"))?;
            let Some(job) = jobs.iter().find(|j| j.device == rep) else {
                break;
            };
            if job.status == crate::qmp::JobStatus::Concluded {
                qmp.job_dismiss(&rep)
                    .await
                    .map_err(qmp_err(node, "dismissing a former replica job"))?;
                continue;
            }
            if let Some(e) = refused.take() {
                return Err(qmp_err(node, "cancelling a former replica job")(e));
            }
            if !ended {
                tracing::info!(disk = %node, job = %rep, "cancelling a replica job a former attempt left");
                ended = true;
                if let Err(e) = qmp.block_job_cancel(&rep, true).await {
                    refused = Some(e);
                    continue;
                }
            }
            if std::time::Instant::now() >= until {
                return Err(LinkError::Resync {
                    disk: node.clone(),
                    reason: format!(
                        "a former replica job ({rep}) did not end within {FINISH_WAIT:?}"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let member = qmp
            .node_children(node)
            .await
            .map_err(qmp_err(node, "reading its children"))?
            .iter()
            .any(|(_, c)| *c == rep);
        if !member && delete_replica_node(qmp, node).await? {
            tracing::info!(disk = %node, node = %rep, "removed a replica node a former attempt left");
        }
        // A socket handed over but never taken by a node (closefd of an
        // unknown name fails; that is the usual case).
        if let Err(e) = qmp.closefd(&format!("{rep}-sock")).await {
            tracing::debug!(disk = %node, error = %e, "closing a former replica socket");
        }
    }
    Ok(())
}

/// With the guest paused: the mirrors end in step, and each replica takes
/// its placeholder's place.
async fn swap_in(
    qmp: &QmpClient,
    mirrors: &mut MirrorSet,
    targets: &[MirrorTarget],
) -> Result<(), LinkError> {
    mirrors
        .finish_in_sync(FINISH_WAIT)
        .await
        .map_err(LinkError::Sync)?;
    join_quorum(qmp, targets).await
}

/// Each of `targets`' replica nodes (in step with its disk, the guest
/// paused) takes its placeholder's place in its disk's quorum.
pub(super) async fn join_quorum(
    qmp: &QmpClient,
    targets: &[MirrorTarget],
) -> Result<(), LinkError> {
    for t in targets {
        let node = &t.node;
        qmp.quorum_add_child(node, &replica_node(node))
            .await
            .map_err(qmp_err(node, "adding the replica to the quorum"))?;
        remove_child(qmp, node, &placeholder(node)).await?;
    }
    Ok(())
}

/// Takes each replicated disk of `nodes` back to working alone: the
/// placeholder takes the replica's place in its quorum and the replica's
/// NBD node goes. A disk already alone is left so. Call it once the
/// replica's loss is recorded; a guest paused on the failed write then goes
/// on with `cont`. A record of the writes a replica missed
/// ([`super::resync`]) goes too: use [`super::resync::detach_tracking`] to
/// keep the replica for a resume.
pub async fn detach(qmp: &QmpClient, nodes: &[String]) -> Result<(), LinkError> {
    unlink(qmp, nodes).await?;
    super::resync::forget_changes(qmp, nodes).await
}

/// [`detach`], keeping the record of the writes the replica missed.
pub(super) async fn unlink(qmp: &QmpClient, nodes: &[String]) -> Result<(), LinkError> {
    for node in nodes {
        let children = qmp
            .node_children(node)
            .await
            .map_err(qmp_err(node, "reading its children"))?;
        if children.is_empty() {
            return Err(LinkError::NotReplicated { disk: node.clone() });
        }
        let rep = replica_node(node);
        let alone = placeholder(node);
        if children.iter().any(|(_, c)| c == &rep) {
            if !children.iter().any(|(_, c)| c == &alone) {
                qmp.quorum_add_child(node, &alone)
                    .await
                    .map_err(qmp_err(node, "putting the placeholder back"))?;
            }
            remove_child(qmp, node, &rep).await?;
        }
        // The NBD node, whether it was a member or only a mirror's target.
        delete_replica_node(qmp, node).await?;
    }
    Ok(())
}

/// Deletes the NBD node of replicated disk `node`'s replica if it exists
/// (no parent may use it); whether it did.
async fn delete_replica_node(qmp: &QmpClient, node: &str) -> Result<bool, LinkError> {
    let rep = replica_node(node);
    let exists = qmp
        .query_named_block_nodes()
        .await
        .map_err(qmp_err(node, "query-named-block-nodes"))?
        .iter()
        .any(|n| n.node_name == rep);
    if exists {
        qmp.blockdev_del(&rep)
            .await
            .map_err(qmp_err(node, "removing the replica's NBD node"))?;
    }
    Ok(exists)
}

/// Removes quorum `parent`'s edge to node `child`, if there is one.
async fn remove_child(qmp: &QmpClient, parent: &str, child: &str) -> Result<(), LinkError> {
    let children = qmp
        .node_children(parent)
        .await
        .map_err(qmp_err(parent, "reading its children"))?;
    if let Some((edge, _)) = children.iter().find(|(_, c)| c == child) {
        qmp.quorum_remove_child(parent, edge)
            .await
            .map_err(qmp_err(
                parent,
                &format!("removing {child} from the quorum"),
            ))?;
    }
    Ok(())
}
