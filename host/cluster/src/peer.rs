//! The application channel between members: the host service (not raft)
//! asks another member to do something — carry out an API action on the
//! host that owns a VM, answer a heartbeat, take part in a live migration.
//!
//! Requests travel over the same mutual-TLS endpoint as raft
//! ([`PATH_PEER`]); only current members are admitted. The store does not
//! interpret them: the host service installs a [`PeerHandler`] with
//! [`ClusterStore::set_peer_handler`] and calls others with
//! [`ClusterStore::call_peer`].

use crate::store::{ClusterStore, StoreError};
use crate::transport::PATH_PEER;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A request of one member to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRequest {
    /// What to do (`action`, `heartbeat`...), chosen by the host service.
    pub method: String,
    /// Its arguments.
    pub body: serde_json::Value,
}

/// The answer: the result, or the error as the handler encoded it.
pub type PeerReply = Result<serde_json::Value, serde_json::Value>;

/// The future a [`PeerHandler`] returns.
pub type PeerFuture = Pin<Box<dyn Future<Output = PeerReply> + Send>>;

/// Carries out requests of member `from`.
pub type PeerHandler = Arc<dyn Fn(NodeId, PeerRequest) -> PeerFuture + Send + Sync>;

impl ClusterStore {
    /// Serve requests of the other members with `handler` (replaces the
    /// previous one). Without a handler they get an error.
    pub fn set_peer_handler(&self, handler: PeerHandler) {
        *self
            .shared
            .peer_handler
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    /// Ask member `node_id` to carry out `method` with `body` within
    /// `timeout`. The outer error is the transport's (host unreachable,
    /// not a member, timeout); the inner one the handler's.
    pub async fn call_peer(
        &self,
        node_id: NodeId,
        method: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<PeerReply, StoreError> {
        let addr = self
            .members()
            .into_iter()
            .find(|m| m.node_id == node_id)
            .map(|m| m.addr)
            .ok_or_else(|| StoreError::Invalid {
                field: "node_id",
                reason: format!("node {node_id} is not a member of this cluster"),
            })?;
        let req = PeerRequest {
            method: method.to_owned(),
            body,
        };
        if node_id == self.node_id() {
            return Ok(self.shared.handle_peer(node_id, req).await);
        }
        let t = self.shared.transport().ok_or(StoreError::NotClustered)?;
        Ok(t.call(node_id, &addr, PATH_PEER, &req, timeout).await?)
    }
}

impl crate::store::Shared {
    pub(crate) async fn handle_peer(&self, from: NodeId, req: PeerRequest) -> PeerReply {
        let handler = self
            .peer_handler
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match handler {
            Some(h) => h(from, req).await,
            None => Err(serde_json::json!({
                "unavailable": { "reason": "this host is starting; try again" }
            })),
        }
    }
}
