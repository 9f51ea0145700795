//! Joining a cluster.
//!
//! 1. A member issues a one-time join token ([`ClusterStore::issue_join_token`]):
//!    `nvjt1.<cluster id>.<CA SHA-256 fingerprint>.<secret>`. Only the
//!    SHA-256 of the secret is stored, in the replicated state (kind
//!    `@join-token`), with its expiry, so any voter that leads can redeem it.
//! 2. The new host ([`ClusterStore::join`]) creates its key and a CSR, and
//!    connects to a member's cluster endpoint with the SNI name
//!    `join.nasvisor.cluster`; it trusts the server only if the server's
//!    chain holds the CA whose fingerprint is in the token. It sends the
//!    cluster id, the secret, the CSR, its address and optionally the node
//!    id it wants ([`JoinRequest`]).
//! 3. The leader (a follower answers "not the leader" with the leader's
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
use std::str::FromStr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::ca::{fingerprint, new_node_key, ClusterCa, Pki};
use crate::state::{TokenRecord, KIND_JOIN_TOKEN};
use crate::store::{now_ms, ClusterStore, Shared, StoreError, DB_FILE, PROMOTE_TIMEOUT};
use crate::transport::{
    join_call, CallError, Forward, ForwardError, ForwardReply, JoinRequest, JoinResponse,
    PATH_FORWARD,
};
use crate::types::{Command, JoinRefused, NodeId, Response};

/// The prefix (and version) of a join token's text.
pub const TOKEN_PREFIX: &str = "nvjt1";
/// The longest accepted token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a join call may take.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A join token's contents.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The cluster id.
    pub cluster_id: String,
    /// SHA-256 of the cluster CA certificate (64 lower-case hex digits).
    pub ca_fingerprint: String,
    /// The one-time secret (64 lower-case hex digits).
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("cluster_id", &self.cluster_id)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.cluster_id, self.ca_fingerprint, self.secret
        )
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for JoinToken {
    type Err = JoinRefused;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| JoinRefused::InvalidToken {
            reason: reason.to_owned(),
        };
        let mut parts = s.trim().split('.');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(bad("it does not start with \"nvjt1.\""));
        }
        let (Some(cluster_id), Some(fp), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it must have 4 dot-separated parts"));
        };
        if !is_hex(cluster_id, 16) {
            return Err(bad("the cluster id must be 16 hex digits"));
        }
        if !is_hex(fp, 64) {
            return Err(bad("the CA fingerprint must be 64 hex digits"));
        }
        if !is_hex(secret, 64) {
            return Err(bad("the secret must be 64 hex digits"));
        }
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            ca_fingerprint: fp.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// SHA-256 (hex) of a token secret: what the cluster stores.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

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
        let pki = self.shared.pki().ok_or(StoreError::NotClustered)?;
        let token = JoinToken {
            cluster_id: pki.cluster_id.clone(),
            ca_fingerprint: pki.ca.fingerprint(),
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
    ) -> Result<Self, StoreError> {
        let limits = nasvisor_limits::ServerLimits::default();
        Self::join_with_limits(data_dir, node_id, my_addr, leader_addr, token, limits).await
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
        if let Some(p) = Pki::load(dir)? {
            return Err(StoreError::AlreadyClustered {
                cluster_id: p.cluster_id,
            });
        }
        let db_path = dir.join(DB_FILE);
        if db_path.exists() {
            check_empty(&db_path)?;
        }

        let (key_pem, csr_pem) = new_node_key()?;
        let config = crate::tls::join_client_config(&token.ca_fingerprint)?;
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
            match join_call(config.clone(), &addr, &req, JOIN_CALL_TIMEOUT).await? {
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
        let pki = check_response(&token, resp.clone(), key_pem)?;
        let node_id = pki.node_id;
        tracing::info!(node_id, cluster_id = %pki.cluster_id, "admitted; starting as a member");

        if db_path.exists() {
            std::fs::remove_file(&db_path).map_err(|source| StoreError::CreateDir {
                path: db_path.clone(),
                source,
            })?;
        }
        pki.save(dir)?;
        let store = Self::open(dir, node_id, my_addr.clone()).await?;
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
            let _ = store.shutdown().await;
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
        let t = self.shared.transport().ok_or(StoreError::NotClustered)?;
        let deadline = Instant::now() + PROMOTE_TIMEOUT;
        let (mut id, mut addr) = (leader_id, leader_addr);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r: Result<Result<ForwardReply, ForwardError>, CallError> = t
                .call(id, &addr, PATH_FORWARD, &Forward::JoinComplete, left)
                .await;
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
    let sm = crate::state_machine::StateMachineStore::new(std::sync::Arc::new(db)).map_err(
        |source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        },
    )?;
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
    token: &JoinToken,
    resp: JoinResponse,
    node_key_pem: String,
) -> Result<Pki, StoreError> {
    let bad = |reason: String| {
        StoreError::JoinRefused(JoinRefused::Internal {
            reason: format!("the cluster's answer is unusable: {reason}"),
        })
    };
    if resp.cluster_id != token.cluster_id {
        return Err(bad(format!("cluster id {}", resp.cluster_id)));
    }
    let ca = ClusterCa::from_pem(&resp.ca_cert_pem, resp.ca_key_pem.as_deref())?;
    if fingerprint(ca.cert_der()) != token.ca_fingerprint {
        return Err(bad("the CA is not the one of the token".into()));
    }
    let pki = Pki {
        cluster_id: resp.cluster_id,
        node_id: resp.node_id,
        ca,
        node_cert_pem: resp.node_cert_pem,
        node_key_pem,
    };
    pki.node_chain().map_err(bad)?;
    Ok(pki)
}

impl Shared {
    /// The join route: admit a host with a token (see the module docs).
    pub(crate) async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, JoinRefused> {
        let internal = |e: StoreError| JoinRefused::Internal {
            reason: e.to_string(),
        };
        let pki = self.pki().ok_or_else(|| JoinRefused::Internal {
            reason: "this host is not part of a cluster".into(),
        })?;
        if req.cluster_id != pki.cluster_id {
            return Err(JoinRefused::InvalidToken {
                reason: format!(
                    "it is for cluster {}, this is cluster {}",
                    req.cluster_id, pki.cluster_id
                ),
            });
        }
        let addr_ok = req
            .addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !addr_ok {
            return Err(JoinRefused::BadRequest {
                field: "addr".into(),
                reason: format!("{:?} is not a host:port address", req.addr),
            });
        }
        let key = match ClusterCa::check_csr(&req.csr_pem) {
            Ok(key) => key,
            Err(e) => {
                return Err(JoinRefused::BadRequest {
                    field: "csr".into(),
                    reason: e.to_string(),
                })
            }
        };
        let _g = self.admin.lock().await;
        if !self.is_leader() {
            return Err(JoinRefused::NotLeader {
                leader_addr: self.leader().and_then(|(_, a)| a),
            });
        }
        // A stranger with a made-up token must not get anything into the
        // log: check against this leader's state first (applying the
        // command checks again, authoritatively).
        let (token_hash, now) = (secret_hash(&req.secret), now_ms());
        let precheck = self
            .sm
            .read()
            .state
            .check_admit(&token_hash, now, req.node_id, Some(&key));
        if let Err(reason) = precheck {
            tracing::warn!(%reason, addr = %req.addr, "join refused");
            return Err(reason);
        }
        // The joining host pins the members with the keys it is told: the
        // leader's own must be recorded (a cluster created before keys were).
        self.record_key(self.node_id, None).await;
        let cmd = Command::Admit {
            token_hash,
            now_ms: now,
            node_id: req.node_id,
            addr: req.addr.clone(),
            key: Some(key),
        };
        let node_id = match self.write(cmd).await.map_err(internal)? {
            Response::Admitted { node_id } => node_id,
            Response::Refused { reason } => {
                tracing::warn!(%reason, addr = %req.addr, "join refused");
                return Err(reason);
            }
            other => {
                return Err(JoinRefused::Internal {
                    reason: format!("unexpected response {other:?}"),
                })
            }
        };
        let node_cert_pem = pki
            .ca
            .issue(node_id, &req.addr, &req.csr_pem)
            .map_err(|e| internal(e.into()))?;
        let members: BTreeMap<NodeId, String> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let member_keys = {
            let state = &self.sm.read().state;
            members
                .keys()
                .filter_map(|id| Some((*id, state.node(*id)?.key?)))
                .collect()
        };
        tracing::info!(node_id, addr = %req.addr, "admitted a host");
        Ok(JoinResponse {
            cluster_id: pki.cluster_id.clone(),
            node_id,
            node_cert_pem,
            ca_cert_pem: pki.ca.cert_pem().to_owned(),
            ca_key_pem: pki.ca.key_pem(),
            members,
            member_keys,
            leader_id: self.node_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_errors() {
        let t = JoinToken {
            cluster_id: "0123456789abcdef".into(),
            ca_fingerprint: "a".repeat(64),
            secret: "b".repeat(64),
        };
        let s = t.to_string();
        assert!(s.starts_with("nvjt1.0123456789abcdef."));
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains(&"b".repeat(64)),
            "the secret is not logged"
        );
        for bad in [
            "",
            "nvjt2.0123456789abcdef.aa.bb",
            "nvjt1.0123456789abcdef",
            &s.replace("nvjt1.0123", "nvjt1.X123"),
            &format!("{s}.extra"),
            &s[..s.len() - 1],
        ] {
            assert!(
                matches!(
                    bad.parse::<JoinToken>(),
                    Err(JoinRefused::InvalidToken { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(secret_hash("x").len(), 64);
    }
}
