//! The application channel between members: the host service (not raft)
//! asks another member to do something — carry out an API action on the
//! host that owns a VM, answer a heartbeat, take part in a live migration.
//!
//! Requests travel over the same mutual-TLS endpoint as raft
//! ([`crate::wire::PATH_PEER`]); only current members are admitted. The
//! store does not interpret them: the host service installs a
//! [`PeerHandler`] with [`crate::ClusterStore::set_peer_handler`] and calls
//! others with [`crate::ClusterStore::call_peer`].

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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

/// The answer to a peer request while no handler is installed: the core's
/// typed "unavailable" error, as every other refusal travels.
pub(crate) fn starting() -> PeerReply {
    let e = nasvisor_api_types::CoreError::Unavailable {
        reason: "this host is starting; try again".into(),
    };
    // An enum of strings always serializes; the `Null` is unreachable.
    Err(serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use nasvisor_api_types::CoreError;

    #[test]
    fn a_call_before_the_core_is_installed_is_refused_as_the_core_refuses() {
        let refused = super::starting().unwrap_err();
        let e: CoreError = serde_json::from_value(refused).unwrap();
        assert!(
            matches!(&e, CoreError::Unavailable { reason } if reason.contains("starting")),
            "{e:?}"
        );
    }
}
