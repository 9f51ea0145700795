//! What the store needs from the network, as traits: the network crate
//! (`nasvisor-cluster-net`: hyper, rustls, rcgen) implements them and the
//! daemon hands an implementation to the store when it opens it
//! ([`crate::ClusterStore::open_with_network`]). This crate compiles no
//! HTTP or TLS stack.
//!
//! - [`ClusterNet`]: certificates (the cluster CA, node keys, requests),
//!   the transport client ([`PeerClient`]), the cluster endpoint's server
//!   ([`ServerHandle`], serving a [`Served`]) and the join call of a
//!   host that has no certificate yet.
//! - [`PeerClient`]: `POST` a JSON body to a route of a member, with
//!   mutual TLS; [`call`] encodes and decodes.
//! - [`Served`]: what the server asks the store (admission, the answer to
//!   a request); the store's [`crate::endpoint::Endpoint`] implements it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::identity::{CheckedIdentity, Identity, PkiError};
use crate::trust::Admission;
use crate::trust::{KeyCheck, KeySeen};
use crate::types::{JoinRefused, NodeId};

pub use crate::error::{CallError, ServeError, TlsError};
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
        endpoint: Arc<dyn Served>,
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

/// What the cluster endpoint's server asks the store.
pub trait Served: Send + Sync + std::fmt::Debug {
    /// Whether the store still runs (otherwise every request gets `503`).
    fn is_open(&self) -> bool;

    /// Whether node `id` presenting a certificate with key pin `key` may
    /// talk to this host; checked in the TLS handshake and again on every
    /// request.
    fn admission(&self, id: NodeId, key: &str) -> Admission;

    /// Whether `ip` is the address of a member or of a host joining: their
    /// connections are not counted against the endpoint's connection caps.
    fn is_member_ip(&self, ip: std::net::IpAddr) -> bool;

    /// Carry out the request `body` on route `path` of member `peer`
    /// (`None`: a joining host, which the server lets reach the join route
    /// only).
    fn handle(
        &self,
        peer: Option<NodeId>,
        path: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Reply>;
}

/// The answer to one request of the cluster endpoint.
#[derive(Debug)]
pub enum Reply {
    /// `200`, this JSON body.
    Json(Vec<u8>),
    /// `400`: the body is not the route's message.
    BadBody(String),
    /// `404`: no such route.
    NotFound(String),
    /// `503`: the store is closing.
    Closing,
    /// `500`: the answer could not be encoded.
    Failed(String),
}
