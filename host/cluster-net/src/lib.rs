//! The network of nasvisor's cluster store: the cluster's own CA and the
//! hosts' certificates (rcgen), mutual TLS with key pins (rustls), and the
//! cluster endpoint over HTTP/1.1 (hyper), server and client.
//!
//! [`TlsNet`] implements [`nasvisor_cluster::ClusterNet`]; the daemon
//! creates it and hands it to the store
//! ([`nasvisor_cluster::ClusterStore::open_with_network`], `create`,
//! `join`). The store's crate compiles none of this.
//!
//! Modules:
//! - [`ca`]: the cluster CA, node keys and certificates, key pins, [`ca::Pki`];
//! - [`tls`]: the rustls configurations and their verifiers (the key
//!   pins are checked against the store's admission, [`nasvisor_cluster::trust`]);
//! - [`client`]: the transport client ([`client::PeerTransport`]) and the
//!   join call;
//! - `server`: the cluster endpoint's listener, TLS by SNI, limits, routes
//!   handed to the store ([`nasvisor_cluster::net::Served`]).

pub mod ca;
pub mod client;
mod server;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nasvisor_cluster::identity::{CheckedIdentity, Identity, PkiError};
use nasvisor_cluster::net::{
    BoxFuture, CallError, ClusterNet, PeerClient, ServeError, Served, ServerHandle, TlsError,
};
use nasvisor_cluster::trust::{KeyCheck, KeySeen};
use nasvisor_cluster::wire::{JoinRequest, JoinResponse};
use nasvisor_cluster::{JoinRefused, NodeId, ServerLimits};

use crate::ca::{ClusterCa, Pki};

/// The cluster network over mutual TLS: what `nasvisord` hands the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsNet;

impl TlsNet {
    /// The network, ready to hand to a store.
    pub fn shared() -> Arc<dyn ClusterNet> {
        Arc::new(Self)
    }
}

fn tls_err(e: tls::TlsError) -> TlsError {
    TlsError(e.to_string())
}

/// Parse `identity`, for the TLS configurations (it was checked when the
/// store loaded it; a file name is only needed for that first check).
fn parse(identity: &CheckedIdentity) -> Result<Pki, TlsError> {
    Pki::from_identity(identity.identity.clone(), Path::new(""))
        .map_err(|e| TlsError(format!("cluster TLS identity: {e}")))
}

impl ClusterNet for TlsNet {
    fn create_identity(&self, node_id: NodeId, addr: &str) -> Result<Identity, PkiError> {
        Ok(Pki::create(node_id, addr)?.to_identity())
    }

    fn check_identity(&self, identity: Identity) -> Result<CheckedIdentity, PkiError> {
        Pki::from_identity(identity, Path::new(nasvisor_cluster::identity::PKI_DIR))?.checked()
    }

    fn new_node_key(&self) -> Result<(String, String), PkiError> {
        ca::new_node_key()
    }

    fn check_csr(&self, csr_pem: &str) -> Result<String, PkiError> {
        ClusterCa::check_csr(csr_pem)
    }

    fn issue(
        &self,
        ca: &Identity,
        node_id: NodeId,
        addr: &str,
        csr_pem: &str,
    ) -> Result<String, PkiError> {
        ClusterCa::from_pem(&ca.ca_cert_pem, ca.ca_key_pem.as_deref())?
            .issue(node_id, addr, csr_pem)
    }

    fn client(
        &self,
        identity: &CheckedIdentity,
        check: KeyCheck,
        seen: KeySeen,
    ) -> Result<Arc<dyn PeerClient>, TlsError> {
        let pki = parse(identity)?;
        let config = tls::peer_client_config(&pki, check, seen).map_err(tls_err)?;
        Ok(Arc::new(client::PeerTransport::new(pki.node_id, config)))
    }

    fn serve(
        &self,
        listener: tokio::net::TcpListener,
        identity: &CheckedIdentity,
        endpoint: Arc<dyn Served>,
        limits: ServerLimits,
    ) -> Result<Box<dyn ServerHandle>, ServeError> {
        let pki = parse(identity)?;
        let admit = endpoint.clone();
        let check: KeyCheck = Arc::new(move |id, key| admit.admission(id, key));
        let peer = tls::peer_server_config(&pki, check).map_err(tls_err)?;
        let join = tls::join_server_config(&pki).map_err(tls_err)?;
        Ok(Box::new(server::serve(
            listener, endpoint, peer, join, limits,
        )?))
    }

    fn join_call<'a>(
        &'a self,
        ca_fingerprint: &'a str,
        addr: &'a str,
        req: &'a JoinRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Result<JoinResponse, JoinRefused>, CallError>> {
        Box::pin(async move {
            let config =
                tls::join_client_config(ca_fingerprint).map_err(|e| CallError::Connect {
                    target: 0,
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                })?;
            client::join_call(config, addr, req, timeout).await
        })
    }
}
