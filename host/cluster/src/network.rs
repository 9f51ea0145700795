//! The raft network: [`RaftNetworkFactory`] for [`TypeConfig`].
//!
//! This step ships a cluster of one, which never sends a raft RPC. Every
//! remote node is therefore reported [`Unreachable`]: a leader keeps
//! retrying (with openraft's backoff) and a follower never hears from it.
//!
//! The real transport, raft RPCs over HTTPS with mutual TLS using
//! certificates from the cluster's own CA (invariant I5), comes with the
//! multi-host cluster issue. It replaces [`UnreachableNetwork`] here and
//! nothing else: joining a second host is a membership change
//! (`Raft::add_learner` + `Raft::change_membership`), not another code path.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::types::{Node, NodeId, TypeConfig};

/// Creates a client per remote node.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

/// The client of one remote node: every call fails with [`Unreachable`].
#[derive(Debug, Clone)]
pub struct UnreachableNetwork {
    target: NodeId,
    addr: String,
}

/// Why the node is unreachable.
#[derive(Debug, thiserror::Error)]
#[error("raft network to node {target} at {addr:?} is not implemented yet (single-host cluster)")]
pub struct NoTransport {
    target: NodeId,
    addr: String,
}

impl UnreachableNetwork {
    fn err<E: std::error::Error>(&self) -> RPCError<NodeId, Node, E> {
        RPCError::Unreachable(Unreachable::new(&NoTransport {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = UnreachableNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        UnreachableNetwork {
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for UnreachableNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(self.err())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.err())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_rpc_is_unreachable() {
        let mut f = NetworkFactory;
        let mut c = f.new_client(2, &Node::new("10.0.0.2:7443")).await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let err = c
            .vote(vote, RPCOption::new(std::time::Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains("not implemented yet"), "{err}");
    }
}
