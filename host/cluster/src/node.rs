//! The node internals: what the store facade ([`crate::ClusterStore`]) and
//! the cluster endpoint ([`crate::endpoint::Endpoint`]) share. The raft
//! node, the applied state, this host's identity and transport client,
//! and what only the leader does: commit forwarded writes, promote joining
//! hosts, remove hosts, record keys.
//!
//! This module knows nothing of the facade or of the endpoint; both hold
//! an [`Arc<Shared>`] (the endpoint a weak one). It is about 700 lines: the
//! leader-only writes and the node they drive are kept together.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::Serialize;

use crate::error::{raft_err, StoreError};
use crate::identity::{addr_host, CheckedIdentity};
use crate::net::{call, CallError, ClusterNet, PeerClient};
use crate::peer::{PeerHandler, PeerReply, PeerRequest};
use crate::raft_net::ClientSlot;
use crate::state::{NodeRecord, NodeStatus, KIND_NODE};
use crate::state_machine::StateMachineStore;
use crate::trust::{decide, Admission, Facts, KeyCheck, KeySeen, Recording, Refusal};
use crate::types::{Command, Node, NodeId, Raft, Response, Revision};
use crate::wire::{Forward, ForwardError, ForwardReply, PATH_FORWARD};
use nasvisor_limits::ServerLimits;

/// How long a write or read forwarded to the leader may take, including
/// waiting for a leader to be elected.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the leader may take to bring a joining host up to date and
/// promote it.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the store shares with the cluster endpoint's tasks.
pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) dir: PathBuf,
    pub(crate) raft: Raft,
    pub(crate) sm: StateMachineStore,
    /// The network; `None`: a store opened without one (a host that is a
    /// cluster of one and cannot become more).
    pub(crate) net: Option<Arc<dyn ClusterNet>>,
    /// This host's cluster identity, once it created or joined a cluster.
    pub(crate) identity: RwLock<Option<Arc<CheckedIdentity>>>,
    /// The transport client the raft network and the forwards use.
    pub(crate) client: ClientSlot,
    /// Members of the cluster this host is joining and their key pins (from
    /// the join answer), admitted until this host has received the
    /// membership.
    pub(crate) bootstrap: RwLock<BTreeMap<NodeId, Option<String>>>,
    /// The hosts whose key the leader is recording.
    pub(crate) recording: Recording,
    /// The limits of the cluster endpoint.
    pub(crate) limits: RwLock<ServerLimits>,
    /// Serializes membership changes made by this host as leader.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// The host service's handler of [`crate::peer`] requests.
    pub(crate) peer_handler: RwLock<Option<PeerHandler>>,
}

impl Shared {
    /// This host's cluster identity, once it created or joined a cluster.
    pub(crate) fn identity(&self) -> Option<Arc<CheckedIdentity>> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The network, or why the operation `what` cannot be done.
    pub(crate) fn net(&self, what: &'static str) -> Result<&Arc<dyn ClusterNet>, StoreError> {
        self.net.as_ref().ok_or(StoreError::NoNetwork(what))
    }

    /// The transport client, once this host is part of a cluster.
    pub(crate) fn client(&self) -> Option<Arc<dyn PeerClient>> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn has_client(&self) -> bool {
        self.client().is_some()
    }

    /// Use `identity` as this host's cluster identity: the raft network
    /// gets a mutual-TLS client, which talks only to servers with the key
    /// recorded for them.
    pub(crate) fn install_identity(
        self: &Arc<Self>,
        identity: CheckedIdentity,
    ) -> Result<(), StoreError> {
        let net = self.net("talk to the cluster")?;
        let client = net.client(&identity, self.key_check(), self.key_seen())?;
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = Some(client);
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(identity));
        Ok(())
    }

    pub(crate) fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The current leader and its address, as this host knows them.
    pub(crate) fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        Some((id, addr))
    }

    pub(crate) fn get(&self, kind: &str, key: &str) -> Option<(serde_json::Value, Revision)> {
        self.get_with(kind, key, |v, rev| (v.clone(), rev))
    }

    /// `f` of `kind`/`key`'s value and revision, read in place.
    pub(crate) fn get_with<T>(
        &self,
        kind: &str,
        key: &str,
        f: impl FnOnce(&serde_json::Value, Revision) -> T,
    ) -> Option<T> {
        let a = self.sm.read();
        a.state.get(kind, key).map(|o| f(&o.value, o.revision))
    }

    /// Commit `cmd`: on the leader directly, otherwise forwarded to it.
    /// Without a cluster (no transport) a follower answers
    /// [`StoreError::NotLeader`].
    ///
    /// Boxed: a write may be forwarded, handling a forward may write.
    pub(crate) fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Response, StoreError>> {
        Box::pin(self.write_inner(cmd))
    }

    async fn write_inner(&self, cmd: Command) -> Result<Response, StoreError> {
        // A leader cut off from its quorum would wait for ever: bounded.
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(FORWARD_TIMEOUT, self.raft.client_write(cmd.clone()))
            .await
            .map_err(|_| StoreError::Unconfirmed(FORWARD_TIMEOUT));
        if !matches!(
            written,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                _
            ))))
        ) {
            // Proposed here (a forward is timed by the leader).
            nasvisor_metrics::raft_commit(
                matches!(written, Ok(Ok(_))),
                started.elapsed().as_secs_f64(),
            );
        }
        let written = written?;
        match written {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                if !self.has_client() {
                    return not_leader(&f);
                }
                match self
                    .leader_call(Forward::Write(cmd), FORWARD_TIMEOUT)
                    .await?
                {
                    ForwardReply::Written(r) => Ok(r),
                    other => Err(StoreError::Raft(format!("unexpected answer {other:?}"))),
                }
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// The term this node leads in; `None` when it does not lead.
    pub(crate) fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.node_id))
            .then_some(m.current_term)
    }

    /// Commit `cmd` as the leader of `term` ([`Command::InTerm`]): never
    /// forwarded, and refused unless this node leads in that term.
    pub(crate) async fn write_in_term(
        &self,
        term: u64,
        cmd: Command,
    ) -> Result<Response, StoreError> {
        if self.leader_term() != Some(term) {
            return Err(StoreError::Deposed {
                term,
                entry_term: None,
            });
        }
        let cmd = Command::InTerm {
            term,
            command: Box::new(cmd),
        };
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(FORWARD_TIMEOUT, self.raft.client_write(cmd))
            .await
            .map_err(|_| StoreError::Unconfirmed(FORWARD_TIMEOUT));
        nasvisor_metrics::raft_commit(
            matches!(written, Ok(Ok(_))),
            started.elapsed().as_secs_f64(),
        );
        let written = written?;
        match written {
            Ok(r) => match r.data {
                Response::WrongTerm { term, entry_term } => Err(StoreError::Deposed {
                    term,
                    entry_term: Some(entry_term),
                }),
                resp => Ok(resp),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(StoreError::Deposed {
                    term,
                    entry_term: None,
                })
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Write one of the cluster's own records (`@` kinds).
    pub(crate) async fn write_record<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        expected_revision: Option<Revision>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_value(value).map_err(|e| StoreError::Invalid {
            field: "value",
            reason: e.to_string(),
        })?;
        let cmd = Command::Put {
            kind: kind.to_owned(),
            key: key.to_owned(),
            value,
            expected_revision,
        };
        written(self.write(cmd).await?).map(|_| ())
    }

    pub(crate) async fn read_linearizable(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.get(kind, key)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => not_leader(&f),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Have the leader carry out `fwd`: this host if it leads, otherwise
    /// the leader over the transport. Retries while no leader is known or
    /// the one asked no longer leads, until `timeout`; never retries a
    /// request that may have been carried out.
    pub(crate) async fn leader_call(
        &self,
        fwd: Forward,
        timeout: Duration,
    ) -> Result<ForwardReply, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut last = StoreError::NotLeader {
            leader: None,
            leader_addr: None,
        };
        loop {
            match self.leader() {
                Some((id, _)) if id == self.node_id => {
                    match self.handle_forward(self.node_id, fwd.clone()).await {
                        Ok(r) => return Ok(r),
                        Err(ForwardError::NotLeader {
                            leader_id,
                            leader_addr,
                        }) => {
                            last = StoreError::NotLeader {
                                leader: leader_id,
                                leader_addr,
                            }
                        }
                        Err(ForwardError::Failed(message)) => {
                            return Err(StoreError::Remote {
                                node_id: id,
                                message,
                            })
                        }
                    }
                }
                Some((id, Some(addr))) => {
                    let t = self.client().ok_or(StoreError::NotLeader {
                        leader: Some(id),
                        leader_addr: Some(addr.clone()),
                    })?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    let r: Result<Result<ForwardReply, ForwardError>, CallError> = call(
                        &*t,
                        id,
                        &addr,
                        PATH_FORWARD,
                        &fwd,
                        left.max(Duration::from_millis(100)),
                    )
                    .await;
                    match r {
                        Ok(Ok(r)) => return Ok(r),
                        Ok(Err(ForwardError::NotLeader {
                            leader_id,
                            leader_addr,
                        })) => {
                            last = StoreError::NotLeader {
                                leader: leader_id,
                                leader_addr,
                            }
                        }
                        Ok(Err(ForwardError::Failed(message))) => {
                            return Err(StoreError::Remote {
                                node_id: id,
                                message,
                            })
                        }
                        Err(e) if e.retryable() => last = StoreError::Transport(e),
                        Err(e) => return Err(StoreError::Transport(e)),
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Carry out a request forwarded by member `peer` (or by this host).
    pub(crate) async fn handle_forward(
        &self,
        peer: NodeId,
        fwd: Forward,
    ) -> Result<ForwardReply, ForwardError> {
        let failed = |e: StoreError| match e {
            StoreError::NotLeader {
                leader,
                leader_addr,
            } => ForwardError::NotLeader {
                leader_id: leader,
                leader_addr,
            },
            e => ForwardError::Failed(e.to_string()),
        };
        match fwd {
            Forward::Ping => Ok(ForwardReply::Done),
            Forward::Write(cmd) if peer != self.node_id && writes_membership(&cmd) => {
                tracing::warn!(peer, "refused a forwarded write of the membership records");
                Err(ForwardError::Failed(format!(
                    "node {peer} may not write the membership records: hosts are admitted \
                     with a join token and removed with `cluster remove`"
                )))
            }
            Forward::Write(cmd) => match self.raft.client_write(cmd).await {
                Ok(r) => Ok(ForwardReply::Written(r.data)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ForwardError::NotLeader {
                        leader_id: f.leader_id,
                        leader_addr: f.leader_node.map(|n| n.addr),
                    })
                }
                Err(e) => Err(ForwardError::Failed(e.to_string())),
            },
            Forward::Read { kind, key } => self
                .read_linearizable(&kind, &key)
                .await
                .map(ForwardReply::Read)
                .map_err(failed),
            Forward::JoinComplete => self
                .promote(peer)
                .await
                .map(|()| ForwardReply::Done)
                .map_err(failed),
            Forward::Remove { node_id } => self
                .remove(node_id)
                .await
                .map(|()| ForwardReply::Done)
                .map_err(failed),
        }
    }

    fn ensure_leader(&self) -> Result<(), StoreError> {
        if self.is_leader() {
            return Ok(());
        }
        let (leader, leader_addr) = match self.leader() {
            Some((id, addr)) => (Some(id), addr),
            None => (None, None),
        };
        Err(StoreError::NotLeader {
            leader,
            leader_addr,
        })
    }

    /// Membership change with retries while another one is in progress.
    async fn change_membership(
        &self,
        changes: ChangeMembers<NodeId, Node>,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + PROMOTE_TIMEOUT;
        loop {
            match self.raft.change_membership(changes.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return not_leader(&f)
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(raft_err(e)),
            }
        }
    }

    /// On the leader: bring the admitted host `peer` up to date as a
    /// learner, then make it a voter, then record it as a member.
    async fn promote(&self, peer: NodeId) -> Result<(), StoreError> {
        let _g = self.admin.lock().await;
        self.ensure_leader()?;
        let rec = self.sm.read().state.node(peer);
        let rec = match rec {
            Some(r) if r.status != NodeStatus::Removed => r,
            Some(_) => {
                return Err(StoreError::Invalid {
                    field: "node_id",
                    reason: format!("node {peer} was removed from the cluster"),
                })
            }
            None => {
                return Err(StoreError::Invalid {
                    field: "node_id",
                    reason: format!("node {peer} was not admitted with a join token"),
                })
            }
        };
        tracing::info!(node_id = peer, addr = %rec.addr, "adding a learner");
        let add = self
            .raft
            .add_learner(peer, Node::new(rec.addr.clone()), true);
        match tokio::time::timeout(PROMOTE_TIMEOUT, add).await {
            Err(_) => return Err(StoreError::Timeout("the new host to catch up")),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return not_leader(&f)
            }
            Ok(Err(e)) => return Err(raft_err(e)),
            Ok(Ok(_)) => {}
        }
        tracing::info!(node_id = peer, "promoting to voter");
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([peer])))
            .await?;
        let member = NodeRecord {
            status: NodeStatus::Member,
            ..rec
        };
        self.write_record(KIND_NODE, &peer.to_string(), &member, None)
            .await
    }

    /// On the leader: remove host `id`.
    async fn remove(&self, id: NodeId) -> Result<(), StoreError> {
        let _g = self.admin.lock().await;
        self.ensure_leader()?;
        if id == self.node_id {
            return Err(StoreError::Invalid {
                field: "node_id",
                reason: format!(
                    "node {id} is the leader; remove it from another host after it steps down"
                ),
            });
        }
        let rec = self.sm.read().state.node(id);
        let Some(rec) = rec.filter(|r| r.status != NodeStatus::Removed) else {
            return Err(StoreError::Invalid {
                field: "node_id",
                reason: format!("node {id} is not a member of this cluster"),
            });
        };
        let (voter, known) = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            let voter = m.membership().voter_ids().any(|v| v == id);
            (voter, m.membership().get_node(&id).is_some())
        };
        if voter {
            self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                .await?;
        }
        if known {
            let m = self.raft.metrics().borrow().membership_config.clone();
            if m.membership().get_node(&id).is_some() {
                self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                    .await?;
            }
        }
        let removed = NodeRecord {
            status: NodeStatus::Removed,
            ..rec
        };
        self.write_record(KIND_NODE, &id.to_string(), &removed, None)
            .await?;
        tracing::info!(node_id = id, "removed from the cluster");
        Ok(())
    }

    /// Carry out a request of the host service of member `from`.
    pub(crate) async fn handle_peer(&self, from: NodeId, req: PeerRequest) -> PeerReply {
        let handler = self
            .peer_handler
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match handler {
            Some(h) => h(from, req).await,
            None => crate::peer::starting(),
        }
    }

    /// Whether node `id` presenting a certificate with key pin `key` may
    /// talk to this host (see [`crate::trust`]).
    pub(crate) fn admission(&self, id: NodeId, key: &str) -> Admission {
        if id == self.node_id {
            let own = self.identity();
            return decide(
                id,
                key,
                Facts::Myself(own.as_ref().map(|i| i.node_key_pin.as_str())),
            );
        }
        let in_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        let record = self.sm.read().state.node(id);
        let bootstrap = match record {
            Some(_) => None,
            None => self
                .bootstrap
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .cloned(),
        };
        decide(
            id,
            key,
            Facts::Other {
                in_membership,
                record,
                bootstrap,
            },
        )
    }

    /// Whether `ip` is the address of a member or of a host joining (the
    /// address part of its recorded cluster address; host names are not
    /// resolved). Their connections are not counted against the cluster
    /// endpoint's connection caps.
    pub(crate) fn is_member_ip(&self, ip: IpAddr) -> bool {
        let is = |addr: &str| {
            addr_host(addr)
                .parse::<IpAddr>()
                .is_ok_and(|a| a.to_canonical() == ip)
        };
        let in_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| is(&n.addr));
        in_membership
            || self
                .sm
                .read()
                .state
                .nodes()
                .values()
                .any(|n| n.status != NodeStatus::Removed && is(&n.addr))
    }

    /// A check for the TLS layer that holds this host only weakly.
    pub(crate) fn key_check(self: &Arc<Self>) -> KeyCheck {
        let weak = Arc::downgrade(self);
        Arc::new(move |id, key| match weak.upgrade() {
            Some(s) => s.admission(id, key),
            None => Admission::Refused(Refusal::NotMember(id)),
        })
    }

    /// What the client side calls when a server it dialled has no pin: the
    /// leader records the key (in the background).
    pub(crate) fn key_seen(self: &Arc<Self>) -> KeySeen {
        let weak = Arc::downgrade(self);
        Arc::new(move |id, key| {
            let Some(s) = weak.upgrade() else { return };
            if !s.is_leader() {
                return;
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    s.record_key(id, Some(key)).await;
                    s.record_key(s.node_id, None).await;
                });
            }
        })
    }

    /// On the leader: record `key` as node `id`'s pin if its record has none
    /// (`key` `None`: this host's own key). Logged, never fails the caller.
    pub(crate) async fn record_key(&self, id: NodeId, key: Option<String>) {
        let key = match key {
            Some(k) => k,
            None => match self.identity() {
                Some(i) => i.node_key_pin.clone(),
                None => return,
            },
        };
        let rec = {
            let a = self.sm.read();
            let rev = a.state.get(KIND_NODE, &id.to_string()).map(|o| o.revision);
            a.state.node(id).zip(rev)
        };
        let Some((rec, rev)) = rec else { return };
        if rec.key.is_some() || rec.status == NodeStatus::Removed || !self.is_leader() {
            return;
        }
        if !self.recording.start(id) {
            return;
        }
        let pinned = NodeRecord {
            key: Some(key.clone()),
            ..rec
        };
        match self
            .write_record(KIND_NODE, &id.to_string(), &pinned, Some(rev))
            .await
        {
            Ok(()) => tracing::info!(
                node_id = id,
                key = %key,
                "recorded the key of a host that joined before keys were recorded"
            ),
            Err(e) => tracing::warn!(node_id = id, error = %e, "recording a host's key failed"),
        }
        self.recording.end(id);
    }
}

/// Whether `cmd` admits a host or changes a host record: only the leader
/// itself does that (joins, promotions, removals, key records), never at a
/// member's request.
fn writes_membership(cmd: &Command) -> bool {
    match cmd {
        Command::Admit { .. } => true,
        Command::Put { kind, .. } | Command::Delete { kind, .. } => kind == KIND_NODE,
        Command::InTerm { command, .. } => writes_membership(command),
    }
}

pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn not_leader<E>(
    f: &openraft::error::ForwardToLeader<NodeId, Node>,
) -> Result<E, StoreError> {
    Err(StoreError::NotLeader {
        leader: f.leader_id,
        leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
    })
}

/// The outcome of a committed put or delete.
pub(crate) fn written(resp: Response) -> Result<Revision, StoreError> {
    match resp {
        Response::Applied { revision } => Ok(revision),
        Response::Conflict {
            kind,
            key,
            expected,
            actual,
        } => Err(StoreError::Conflict {
            kind,
            key,
            expected,
            actual,
        }),
        Response::NotFound { kind, key } => Err(StoreError::NotFound { kind, key }),
        Response::WrongTerm { term, entry_term } => Err(StoreError::Deposed {
            term,
            entry_term: Some(entry_term),
        }),
        Response::Noop | Response::Admitted { .. } | Response::Refused { .. } => Err(
            StoreError::Raft(format!("unexpected response to a write: {resp:?}")),
        ),
    }
}
