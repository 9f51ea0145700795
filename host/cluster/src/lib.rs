//! nasvisor's replicated desired state and cluster membership.
//!
//! All desired state goes through a raft log ([openraft]) persisted in one
//! embedded [redb] database file per host, from the first day: a single host
//! is a cluster of one, and adding a host is a membership change.
//!
//! Layout, following the openraft examples:
//! - [`db`]: the database error type and record encoding;
//! - [`types`]: the raft type config, [`Command`] and [`Response`];
//! - [`state`]: the deterministic desired-state model, with the cluster's
//!   own records (cluster, hosts, join tokens);
//! - [`log_store`]: the raft log on redb;
//! - [`state_machine`]: the raft state machine on redb;
//! - [`ca`]: the cluster's CA and the hosts' certificates;
//! - [`tls`]: the rustls configurations (mutual TLS between members);
//! - [`transport`]: HTTP/1.1 over mutual TLS, server and client;
//! - [`network`]: the raft network over the transport;
//! - [`join`]: join tokens and joining a cluster;
//! - [`store`]: [`ClusterStore`], the host's API.
//!
//! # How the daemon runs it
//!
//! ```text
//! start:     store = ClusterStore::open(dir, node_id, cluster_addr)
//!            if store.cluster_info().is_some() { store.serve(listen).await? }
//! create:    store.create_cluster(ClusterSettings::default()).await?;
//!            store.serve(listen).await?
//! token:     store.issue_join_token(ttl).await?      (any member)
//! join:      (store.shutdown() of the empty single-host store, then)
//!            store = ClusterStore::join(dir, None, cluster_addr, leader, token).await?
//!            (join serves on cluster_addr itself)
//! remove:    store.remove_member(node_id).await?     (any member)
//! ```
//!
//! `open` keeps a host that never created or joined a cluster a cluster of
//! one, exactly as before: no listener, no transport. Writes (`put`,
//! `delete`) on a follower are forwarded to the leader; reads are local,
//! `get_linearizable` asks the leader.

pub mod ca;
pub mod db;
pub mod join;
pub mod log_store;
pub mod network;
pub mod peer;
pub mod state;
pub mod state_machine;
pub mod store;
pub mod tls;
pub mod transport;
pub mod trust;
pub mod types;

pub use join::JoinToken;
pub use nasvisor_limits::ServerLimits;
pub use peer::{PeerFuture, PeerHandler, PeerReply, PeerRequest};
pub use state::{ClusterInfo, NodeStatus};
pub use store::{ClusterSettings, ClusterStore, Member, StoreError};
pub use types::{Command, JoinRefused, NodeId, Response, Revision};
