//! The raft network: [`RaftNetworkFactory`] for [`TypeConfig`], over the
//! transport client ([`crate::net::PeerClient`]) the network crate provides.
//!
//! Raft RPCs are `POST`s of JSON bodies to the peer's cluster endpoint:
//! `/v1/raft/append`, `/v1/raft/vote` and `/v1/raft/snapshot` (openraft
//! 0.9 without `generic-snapshot-data` sends snapshots in chunks through
//! `install_snapshot`; its default `full_snapshot` does the chunking). Each
//! RPC is bounded by openraft's [`RPCOption::hard_ttl`].
//!
//! A host that has not created or joined a cluster has no transport: every
//! peer is then [`Unreachable`] (a cluster of one never sends an RPC). The
//! client is installed into the shared [`ClientSlot`] when the host
//! creates or joins a cluster, without restarting raft.

use std::sync::{Arc, RwLock};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::net::{call, CallError, PeerClient};
use crate::types::{Node, NodeId, TypeConfig};
use crate::wire::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};

/// Where the transport client lives once the host is part of a cluster.
pub type ClientSlot = Arc<RwLock<Option<Arc<dyn PeerClient>>>>;

/// Creates a client per remote node.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory {
    slot: ClientSlot,
}

impl NetworkFactory {
    /// A factory whose clients use whatever transport is in `slot` at the
    /// time of each RPC.
    pub fn new(slot: ClientSlot) -> Self {
        Self { slot }
    }
}

/// The client of one remote node.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    slot: ClientSlot,
}

/// Why a peer cannot be reached without a transport.
#[derive(Debug, thiserror::Error)]
#[error(
    "no cluster transport to node {target} at {addr:?}: this host has not created or joined a cluster"
)]
pub struct NoTransport {
    target: NodeId,
    addr: String,
}

impl PeerNetwork {
    #[allow(clippy::result_large_err)] // openraft's error type
    fn transport<E: std::error::Error>(
        &self,
    ) -> Result<Arc<dyn PeerClient>, RPCError<NodeId, Node, E>> {
        let t = self.slot.read().unwrap_or_else(|e| e.into_inner()).clone();
        t.ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&NoTransport {
                target: self.target,
                addr: self.addr.clone(),
            }))
        })
    }

    async fn rpc<Req, Resp, E>(
        &self,
        action: RPCTypes,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let t = self.transport()?;
        let timeout = option.hard_ttl();
        let res: Result<Resp, RaftError<NodeId, E>> =
            call(&*t, self.target, &self.addr, path, req, timeout)
                .await
                .map_err(|e| match e {
                    CallError::Connect { .. } | CallError::Refused { .. } => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    CallError::Timeout { .. } => RPCError::Timeout(Timeout {
                        action,
                        id: t.self_id(),
                        target: self.target,
                        timeout,
                    }),
                    e => RPCError::Network(NetworkError::new(&e)),
                })?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerNetwork {
            target,
            addr: node.addr.clone(),
            slot: self.slot.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc(RPCTypes::AppendEntries, PATH_APPEND, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RPCTypes::InstallSnapshot, PATH_SNAPSHOT, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc(RPCTypes::Vote, PATH_VOTE, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_cluster_every_rpc_is_unreachable() {
        let mut f = NetworkFactory::default();
        let mut c = f.new_client(2, &Node::new("10.0.0.2:7443")).await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let err = c
            .vote(vote, RPCOption::new(std::time::Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains("not created or joined"), "{err}");
    }
}
