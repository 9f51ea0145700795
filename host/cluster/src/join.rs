//! Joining a cluster.
//!
//! 1. A member issues a one-time join token ([`ClusterStore::issue_join_token`],
//!    [`crate::token`]):
//!    `nvjt1.<cluster id>.<CA SHA-256 fingerprint>.<secret>`. Only the
//!    SHA-256 of the secret is stored, in the replicated state (kind
//!    `@join-token`), with its expiry, so any voter that leads can redeem it.
//! 2. The new host ([`ClusterStore::join`]) creates its key and a CSR, and
//!    connects to a member's cluster endpoint with the SNI name
//!    `join.nasvisor.cluster`; it trusts the server only if the server's
//!    chain holds the CA whose fingerprint is in the token. It sends the
//!    cluster id, the secret, the CSR, its address and optionally the node
//!    id it wants ([`JoinRequest`]). The wire is the network crate's
//!    ([`crate::net::ClusterNet::join_call`]).
//! 3. The leader ([`crate::admit`]; a follower answers "not the leader" with the leader's
//!    address, and the host asks the leader) commits [`Command::Admit`]:
//!    the token must exist, be unused and unexpired, the member limit must
//!    not be reached, the node id must never have been used. A refusal
//!    changes nothing. On success the token is marked used, the host is
//!    recorded as joining, and the leader answers with the node id, the
//!    host's certificate, the CA certificate and key, and the members.
//! 4. The new host writes `<data_dir>/pki/`, opens its store (not
//!    initialized: it waits for the leader's log), serves its cluster
//!    endpoint, then asks the leader over mutual TLS to complete the join:
//!    the leader adds it as a learner (waiting until it has caught up) and
//!    promotes it to voter, then records it as a member.
//!
//! Every member is a voter (up to the limit of 7): a cluster of 3 to 7
//! hosts tolerates the loss of a minority (1 of 3 or 4, 2 of 5 or 6, 3 of 7).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::identity::{CheckedIdentity, Identity};
use crate::net::{call, CallError, ClusterNet};
use crate::node::{now_ms, PROMOTE_TIMEOUT};
use crate::state::{TokenRecord, KIND_JOIN_TOKEN};
use crate::store::{ClusterStore, DB_FILE};
use crate::token::{secret_hash, JoinToken, MAX_TOKEN_TTL};
use crate::types::{JoinRefused, NodeId};
use crate::wire::{Forward, ForwardError, ForwardReply, JoinRequest, JoinResponse, PATH_FORWARD};

/// How long a join call may take.
pub const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl ClusterStore {
    /// `nasvisor cluster join-token`: a one-time token that lets one host
    /// join within `ttl` (1 s to 7 days). Any member may issue it (the
    /// write goes to the leader).
    pub async fn issue_join_token(&self, ttl: Duration) -> Result<String, StoreError> {
        if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
            return Err(StoreError::Invalid {
                field: "ttl",
                reason: format!("must be 1 s to 7 days, got {ttl:?}"),
            });
        }
        let me = self.shared.identity().ok_or(StoreError::NotClustered)?;
        let token = JoinToken {
            cluster_id: me.identity.cluster_id.clone(),
            ca_fingerprint: me.ca_fingerprint.clone(),
            secret: hex::encode(rand::random::<[u8; 32]>()),
        };
        let record = TokenRecord {
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as u64),
            used_by: None,
        };
        self.shared
            .write_record(
                KIND_JOIN_TOKEN,
                &secret_hash(&token.secret),
                &record,
                Some(0),
            )
            .await?;
        Ok(token.to_string())
    }

    /// `nasvisor cluster join <leader_addr> <token>`: make the empty store
    /// in `data_dir` a member of the cluster of `token`, through the member
    /// at `leader_addr`. `node_id`: the id to ask for, or `None` for the
    /// next free one. `my_addr` (`ip:port`) is this host's cluster address:
    /// the endpoint is served on it before the leader adds the host, and the
    /// returned store keeps serving it.
    ///
    /// Returns once this host is a voter. A refused join (bad, used or
    /// expired token, member limit, node id taken) is
    /// [`StoreError::JoinRefused`] and changes nothing, here or in the
    /// cluster.
    ///
    /// Preconditions: `data_dir` is not open and is empty, or holds a store
    /// without desired state (it is then replaced); it has not created or
    /// joined a cluster.
    pub async fn join(
        data_dir: impl AsRef<Path>,
        node_id: Option<NodeId>,
        my_addr: impl Into<String>,
        leader_addr: &str,
        token: &str,
        net: Arc<dyn ClusterNet>,
    ) -> Result<Self, StoreError> {
        let limits = nasvisor_limits::ServerLimits::default();
        Self::join_with_limits(data_dir, node_id, my_addr, leader_addr, token, limits, net).await
    }

    /// [`Self::join`], serving the cluster endpoint within `limits` (see
    /// [`Self::set_server_limits`]).
    pub async fn join_with_limits(
        data_dir: impl AsRef<Path>,
        node_id: Option<NodeId>,
        my_addr: impl Into<String>,
        leader_addr: &str,
        token: &str,
        limits: nasvisor_limits::ServerLimits,
        net: Arc<dyn ClusterNet>,
    ) -> Result<Self, StoreError> {
        limits.check().map_err(|e| StoreError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        let dir = data_dir.as_ref();
        let my_addr = my_addr.into();
        let token: JoinToken = token.parse()?;
        let listen: std::net::SocketAddr = my_addr.parse().map_err(|e| StoreError::Invalid {
            field: "addr",
            reason: format!("{my_addr:?} is not an ip:port address: {e}"),
        })?;
        if let Some(p) = Identity::load(dir)? {
            return Err(StoreError::AlreadyClustered {
                cluster_id: p.cluster_id,
            });
        }
        let db_path = dir.join(DB_FILE);
        if db_path.exists() {
            check_empty(&db_path)?;
        }

        let (key_pem, csr_pem) = net.new_node_key()?;
        let req = JoinRequest {
            cluster_id: token.cluster_id.clone(),
            secret: token.secret.clone(),
            csr_pem,
            addr: my_addr.clone(),
            node_id,
        };
        let mut addr = leader_addr.to_owned();
        let mut hops = 0;
        let resp = loop {
            let answer = net
                .join_call(&token.ca_fingerprint, &addr, &req, JOIN_CALL_TIMEOUT)
                .await?;
            match answer {
                Ok(r) => break r,
                Err(JoinRefused::NotLeader {
                    leader_addr: Some(next),
                }) if hops < 3 && next != addr => {
                    tracing::info!(from = %addr, to = %next, "join: asking the leader");
                    addr = next;
                    hops += 1;
                }
                Err(JoinRefused::NotLeader { .. }) if hops < 20 => {
                    // An election is going on: ask again shortly.
                    hops += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let pki = check_response(&*net, &token, resp.clone(), key_pem)?;
        let node_id = pki.identity.node_id;
        tracing::info!(node_id, cluster_id = %pki.identity.cluster_id, "admitted; starting as a member");

        if db_path.exists() {
            std::fs::remove_file(&db_path).map_err(|source| StoreError::CreateDir {
                path: db_path.clone(),
                source,
            })?;
        }
        pki.identity.save(dir)?;
        let store = Self::open_with_network(dir, node_id, my_addr.clone(), net).await?;
        store.set_server_limits(limits)?;
        *store
            .shared
            .bootstrap
            .write()
            .unwrap_or_else(|e| e.into_inner()) = resp
            .members
            .keys()
            .map(|id| (*id, resp.member_keys.get(id).cloned()))
            .collect::<BTreeMap<_, _>>();
        if let Err(e) = store.finish_join(listen, resp.leader_id, addr).await {
            if let Err(close) = store.shutdown().await {
                tracing::warn!(error = %close, "closing the store of a failed join failed");
            }
            return Err(e);
        }
        Ok(store)
    }

    async fn finish_join(
        &self,
        listen: std::net::SocketAddr,
        leader_id: NodeId,
        leader_addr: String,
    ) -> Result<(), StoreError> {
        self.serve(listen).await?;
        let t = self.shared.client().ok_or(StoreError::NotClustered)?;
        let deadline = Instant::now() + PROMOTE_TIMEOUT;
        let (mut id, mut addr) = (leader_id, leader_addr);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r: Result<Result<ForwardReply, ForwardError>, CallError> =
                call(&*t, id, &addr, PATH_FORWARD, &Forward::JoinComplete, left).await;
            match r {
                Ok(Ok(_)) => break,
                Ok(Err(ForwardError::NotLeader {
                    leader_id: Some(l),
                    leader_addr: Some(a),
                })) => (id, addr) = (l, a),
                Ok(Err(ForwardError::NotLeader { .. })) => {}
                Ok(Err(ForwardError::Failed(message))) => {
                    return Err(StoreError::Remote {
                        node_id: id,
                        message,
                    })
                }
                Err(e) if e.retryable() => {
                    tracing::debug!(error = %e, "join: completing the join, retrying");
                }
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout("the leader to promote this host"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let me = self.node_id();
        self.raft()
            .wait(Some(PROMOTE_TIMEOUT))
            .metrics(
                |m| {
                    m.current_leader.is_some()
                        && m.membership_config
                            .membership()
                            .voter_ids()
                            .any(|v| v == me)
                },
                "this host to be a voter",
            )
            .await
            .map_err(|_| StoreError::Timeout("this host to be a voter"))?;
        Ok(())
    }
}

/// A store may be replaced by a join only if it holds no desired state.
fn check_empty(path: &Path) -> Result<(), StoreError> {
    let db = redb::Database::create(path).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let sm = crate::state_machine::StateMachineStore::new(
        std::sync::Arc::new(db),
        crate::db::WriteWatch::default(),
    )
    .map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let objects = sm.read().state.len();
    if objects > 0 {
        return Err(StoreError::NotEmpty {
            path: path.to_owned(),
            objects,
        });
    }
    Ok(())
}

/// Check the leader's answer against the token and build the identity.
fn check_response(
    net: &dyn ClusterNet,
    token: &JoinToken,
    resp: JoinResponse,
    node_key_pem: String,
) -> Result<CheckedIdentity, StoreError> {
    let bad = |reason: String| {
        StoreError::JoinRefused(JoinRefused::Internal {
            reason: format!("the cluster's answer is unusable: {reason}"),
        })
    };
    if resp.cluster_id != token.cluster_id {
        return Err(bad(format!("cluster id {}", resp.cluster_id)));
    }
    let identity = Identity {
        cluster_id: resp.cluster_id,
        node_id: resp.node_id,
        ca_cert_pem: resp.ca_cert_pem,
        ca_key_pem: resp.ca_key_pem,
        node_cert_pem: resp.node_cert_pem,
        node_key_pem,
    };
    let checked = net.check_identity(identity).map_err(|e| match e {
        crate::identity::PkiError::Bad { path, reason } => {
            bad(format!("{}: {reason}", path.display()))
        }
        e => bad(e.to_string()),
    })?;
    if checked.ca_fingerprint != token.ca_fingerprint {
        return Err(bad("the CA is not the one of the token".into()));
    }
    Ok(checked)
}
