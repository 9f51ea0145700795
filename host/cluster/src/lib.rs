//! nasvisor's replicated desired state and cluster membership, without the
//! network.
//!
//! All desired state goes through a raft log ([openraft]) persisted in one
//! embedded [redb] database file per host, from the first day: a single host
//! is a cluster of one, and adding a host is a membership change.
//!
//! This crate compiles no HTTP or TLS stack. What needs the network
//! (certificates, the mutual-TLS transport, the cluster endpoint's server,
//! the join call) is the [`net::ClusterNet`] trait, which the crate
//! `nasvisor-cluster-net` implements; the daemon hands it to the store.
//!
//! Modules (no module depends on one listed after it, except through the
//! facade's inherent methods in `membership` and `join`):
//! - [`db`]: the database error type and record encoding;
//! - [`types`]: the raft type config, [`Command`] and [`Response`];
//! - [`state`]: the deterministic desired-state model, with the cluster's
//!   own records (cluster, hosts, join tokens);
//! - [`log_store`]: the raft log on redb; [`state_machine`]: the raft state
//!   machine on redb; `open`: opening and verifying the database file;
//! - [`identity`]: certificate names and the identity files;
//! - [`error`]: the error type, [`StoreError`];
//! - [`wire`]: the messages of the cluster endpoint and their routes;
//!   [`peer`]: the host service's requests between members;
//! - [`trust`]: who may talk to this host (admission by key pin);
//! - [`net`]: the network traits, [`net::CallError`];
//! - [`raft_net`]: the raft network over [`net::PeerClient`];
//! - `node`: the node internals the facade and the endpoint share;
//! - [`token`]: join tokens; `admit`: the leader's side of a join;
//! - [`endpoint`]: what the cluster endpoint serves, without the HTTP;
//! - [`store`]: [`ClusterStore`], the host's API; `membership`: creating a
//!   cluster, serving, members; [`join`]: joining a cluster.
//!
//! # How the daemon runs it
//!
//! ```text
//! start:     net = Arc::new(nasvisor_cluster_net::TlsNet)
//!            store = ClusterStore::open_with_network(dir, node_id, cluster_addr, net)
//!            if store.cluster_info().is_some() { store.serve(listen).await? }
//! create:    store.create_cluster(ClusterSettings::default()).await?;
//!            store.serve(listen).await?
//! token:     store.issue_join_token(ttl).await?      (any member)
//! join:      (store.shutdown() of the empty single-host store, then)
//!            store = ClusterStore::join(dir, None, cluster_addr, leader, token, net).await?
//!            (join serves on cluster_addr itself)
//! remove:    store.remove_member(node_id).await?     (any member)
//! ```
//!
//! `open` keeps a host that never created or joined a cluster a cluster of
//! one, exactly as before: no listener, no transport. Writes (`put`,
//! `delete`) on a follower are forwarded to the leader; reads are local,
//! `get_linearizable` asks the leader.

mod admit;
pub mod db;
pub mod endpoint;
pub mod error;
pub mod identity;
pub mod join;
pub mod log_store;
mod membership;
pub mod net;
mod node;
mod open;
pub mod peer;
pub mod raft_net;
pub mod state;
pub mod state_machine;
pub mod store;
pub mod token;
pub mod trust;
pub mod types;
pub mod wire;

pub use error::StoreError;
pub use identity::{node_name, CheckedIdentity, Identity, PkiError};
pub use nasvisor_limits::ServerLimits;
pub use net::{CallError, ClusterNet};
pub use peer::{PeerFuture, PeerHandler, PeerReply, PeerRequest};
pub use state::{ClusterInfo, NodeStatus};
pub use store::{ClusterSettings, ClusterStore, Member};
pub use token::JoinToken;
pub use types::{Command, JoinRefused, NodeId, Response, Revision};
