//! The leader's side of a join (step 3 of [`crate::join`]): check the
//! request against the token and the member limit, commit
//! [`Command::Admit`], sign the host's certificate, answer with the
//! cluster's identity and members.

use std::collections::BTreeMap;

use crate::error::StoreError;
use crate::node::{now_ms, Shared};
use crate::token::secret_hash;
use crate::types::{Command, JoinRefused, NodeId, Response};
use crate::wire::{JoinRequest, JoinResponse};

impl Shared {
    /// The join route: admit a host with a token (see the module docs).
    pub(crate) async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, JoinRefused> {
        let internal = |e: StoreError| JoinRefused::Internal {
            reason: e.to_string(),
        };
        let not_clustered = || JoinRefused::Internal {
            reason: "this host is not part of a cluster".into(),
        };
        let me = self.identity().ok_or_else(not_clustered)?;
        let net = self.net.as_ref().ok_or_else(not_clustered)?;
        let pki = &me.identity;
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
        let key = match net.check_csr(&req.csr_pem) {
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
        let node_cert_pem = net
            .issue(pki, node_id, &req.addr, &req.csr_pem)
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
            ca_cert_pem: pki.ca_cert_pem.clone(),
            ca_key_pem: pki.ca_key_pem.clone(),
            members,
            member_keys,
            leader_id: self.node_id,
        })
    }
}
