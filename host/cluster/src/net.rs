//! What the store needs from the network, as traits: the network crate
//! (`nasvisor-cluster-net`: hyper, rustls, rcgen) implements them and the
//! daemon hands an implementation to the store when it opens it
//! ([`crate::ClusterStore::open_with_network`]). This crate compiles no
//! HTTP or TLS stack.
//!
//! - [`ClusterNet`]: certificates (the cluster CA, node keys, requests),
//!   the transport client ([`PeerClient`]), the cluster endpoint's server
//!   ([`ServerHandle`], serving an [`Endpoint`]) and the join call of a
//!   host that has no certificate yet.
//! - [`PeerClient`]: `POST` a JSON body to a route of a member, with
//!   mutual TLS; [`call`] encodes and decodes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::endpoint::Endpoint;
use crate::identity::{CheckedIdentity, Identity, PkiError};
use crate::trust::{KeyCheck, KeySeen};
use crate::types::{JoinRefused, NodeId};
use crate::wire::{JoinRequest, JoinResponse};
use nasvisor_limits::ServerLimits;

/// A boxed, sendable future (the traits are object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The network of a cluster store.
pub trait ClusterNet: Send + Sync + std::fmt::Debug {
    /// A new cluster: a fresh cluster id and CA, and a certificate for the
    /// founding node `node_id` at `addr` (`host:port`).
    fn create_identity(&self, node_id: NodeId, addr: &str) -> Result<Identity, PkiError>;

    /// Read the certificates and keys of `identity`: they must be usable
    /// for TLS and the node certificate must be for its node id. Errors
    /// name the file ([`crate::identity::CA_CERT`]...) that is unusable.
    fn check_identity(&self, identity: Identity) -> Result<CheckedIdentity, PkiError>;

    /// A new node key and a certificate signing request for it:
    /// `(key PEM, CSR PEM)`.
    fn new_node_key(&self) -> Result<(String, String), PkiError>;

    /// Check that `csr_pem` is a well-signed request for a key of the
    /// cluster's kind and return the key pin every certificate issued for
    /// it carries.
    fn check_csr(&self, csr_pem: &str) -> Result<String, PkiError>;

    /// Sign a certificate for node `node_id` reachable at `addr` with the
    /// public key of `csr_pem`, with the CA of `ca` (which must hold the CA
    /// key). Returns the PEM certificate.
    fn issue(
        &self,
        ca: &Identity,
        node_id: NodeId,
        addr: &str,
        csr_pem: &str,
    ) -> Result<String, PkiError>;

    /// The transport client of this host: it presents `identity` and
    /// admits a server only if `check` does; `seen` is told the key of a
    /// server whose record has no key yet.
    fn client(
        &self,
        identity: &CheckedIdentity,
        check: KeyCheck,
        seen: KeySeen,
    ) -> Result<Arc<dyn PeerClient>, TlsError>;

    /// Serve the cluster endpoint on `listener` within `limits` until the
    /// handle is stopped: members (admitted by `endpoint`) over mutual TLS,
    /// joining hosts on the join name.
    fn serve(
        &self,
        listener: tokio::net::TcpListener,
        identity: &CheckedIdentity,
        endpoint: Endpoint,
        limits: ServerLimits,
    ) -> Result<Box<dyn ServerHandle>, ServeError>;

    /// One join call from a host that has no certificate yet: connect to
    /// `addr`, trusting only the CA with SHA-256 fingerprint
    /// `ca_fingerprint`, and send `req`.
    fn join_call<'a>(
        &'a self,
        ca_fingerprint: &'a str,
        addr: &'a str,
        req: &'a JoinRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Result<JoinResponse, JoinRefused>, CallError>>;
}

/// The client side of the transport.
pub trait PeerClient: Send + Sync + std::fmt::Debug {
    /// This host's node id.
    fn self_id(&self) -> NodeId;

    /// `POST` the JSON `body` to `path` on node `target` at `addr` and
    /// return the answer's body (no deadline of its own: see [`call`]).
    fn post<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        path: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallError>>;
}

/// `POST` `req` as JSON to `path` on node `target` at `addr` and decode
/// the JSON answer, within `timeout`.
pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    client: &dyn PeerClient,
    target: NodeId,
    addr: &str,
    path: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    let body = serde_json::to_vec(req).map_err(|e| CallError::BadAnswer {
        target,
        addr: addr.to_owned(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    let bytes = tokio::time::timeout(timeout, client.post(target, addr, path, body))
        .await
        .map_err(|_| CallError::Timeout {
            target,
            addr: addr.to_owned(),
            timeout,
        })??;
    serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
        target,
        addr: addr.to_owned(),
        reason: format!("cannot decode the answer: {e}"),
    })
}

/// A running cluster endpoint.
pub trait ServerHandle: Send + Sync + std::fmt::Debug {
    /// The address it is bound to.
    fn addr(&self) -> SocketAddr;

    /// Stop listening and close every connection; returns when the server
    /// task has ended.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// A TLS configuration could not be built from the host's identity.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The cluster endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configurations could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Errors of one call to a peer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made; nothing was sent.
    #[error("cannot connect to node {target} at {addr}: {reason}")]
    Connect {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The call did not complete in time (it may have been carried out).
    #[error("call to node {target} at {addr} timed out after {timeout:?}")]
    Timeout {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection failed during the call (it may have been carried
    /// out). A TLS refusal of this host's certificate shows up here too
    /// (TLS 1.3 reports it after the handshake).
    #[error("call to node {target} at {addr} failed: {reason}")]
    Io {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer refused this host (`403`: not a member).
    #[error("node {target} at {addr} refused this host: {reason}")]
    Refused {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What it said.
        reason: String,
    },
    /// The peer answered with an HTTP error or an unreadable body.
    #[error("bad answer from node {target} at {addr}: {reason}")]
    BadAnswer {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

impl CallError {
    /// Whether the request certainly was not carried out.
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Refused { .. })
    }

    /// Whether trying again (maybe elsewhere) may help: nothing was sent
    /// because no connection could be made. A refusal is final.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}
