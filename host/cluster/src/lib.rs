//! nasvisor's replicated desired state.
//!
//! All desired state goes through a raft log ([openraft]) persisted in one
//! embedded [redb] database file per host, from the first day: a single host
//! is a cluster of one, and adding a host is a membership change.
//!
//! Layout, following the openraft examples:
//! - [`db`]: the database error type and record encoding;
//! - [`types`]: the raft type config, [`Command`] and [`Response`];
//! - [`state`]: the deterministic desired-state model;
//! - [`log_store`]: the raft log on redb;
//! - [`state_machine`]: the raft state machine on redb;
//! - [`network`]: the raft network (unreachable stub until the mutual-TLS
//!   transport lands with the multi-host cluster);
//! - [`store`]: [`ClusterStore`], the host's API.

pub mod db;
pub mod log_store;
pub mod network;
pub mod state;
pub mod state_machine;
pub mod store;
pub mod types;

pub use store::{ClusterStore, StoreError};
pub use types::{Command, NodeId, Response, Revision};
