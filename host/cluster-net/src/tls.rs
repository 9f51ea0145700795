//! rustls configurations of the cluster transport.
//!
//! - Peer server ([`peer_server_config`]): a client certificate signed by
//!   the cluster CA is mandatory, its node id must be admitted (a member of
//!   the current raft membership, or a host being added) and its key must
//!   be the one recorded for that node ([`nasvisor_cluster::trust`]); a host removed
//!   from the cluster, or a certificate minted for a member's name with
//!   another key, fails the handshake.
//! - Join server ([`join_server_config`]): selected by the SNI name
//!   [`JOIN_NAME`]; no client certificate (the joining host has none yet),
//!   and only the join route is served on it.
//! - Peer client ([`peer_client_config`]): presents this host's certificate
//!   and verifies the server against the cluster CA, the expected
//!   `node-<id>` name and the key recorded for that node.
//! - Join client ([`join_client_config`]): trusts only the CA whose SHA-256
//!   fingerprint is in the join token (the server sends the CA certificate
//!   in its chain).

use std::sync::Arc;

use nasvisor_tls::{Presented, ServerCheck};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use crate::ca::{fingerprint, node_id_of_name, peer_identity, Pki, JOIN_NAME};
use nasvisor_cluster::trust::{Admission, KeyCheck, KeySeen};
use nasvisor_cluster::NodeId;

/// ALPN protocol of the cluster transport (HTTP/1.1 inside).
pub const ALPN: &[u8] = b"http/1.1";

/// Errors while building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The host's certificate or key is unusable.
    #[error("cluster TLS identity: {0}")]
    Identity(String),
    /// rustls refused the configuration.
    #[error("cluster TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificate cannot be used as a trust anchor.
    #[error("cluster TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn roots(pki: &Pki) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert_der().clone())?;
    Ok(Arc::new(roots))
}

/// The server configuration for peers: mutual TLS, cluster CA, admitted
/// node ids with their recorded keys only.
pub fn peer_server_config(pki: &Pki, admit: KeyCheck) -> Result<Arc<ServerConfig>, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(pki)?, nasvisor_tls::provider())
        .build()?;
    let verifier = Arc::new(MemberVerifier { inner, admit });
    let mut config = nasvisor_tls::server_config_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pki.node_chain().map_err(TlsError::Identity)?,
            pki.node_key().map_err(TlsError::Identity)?,
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration for joining hosts: no client certificate.
pub fn join_server_config(pki: &Pki) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = nasvisor_tls::server_config_builder()?
        .with_no_client_auth()
        .with_single_cert(
            pki.node_chain().map_err(TlsError::Identity)?,
            pki.node_key().map_err(TlsError::Identity)?,
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for peers: this host's certificate, servers
/// verified against the cluster CA (the expected name is given per
/// connection: `node-<id>.nasvisor.cluster`) and by `check` against the
/// key recorded for that node. `seen` is told the key of a server whose
/// record has no key yet.
pub fn peer_client_config(
    pki: &Pki,
    check: KeyCheck,
    seen: KeySeen,
) -> Result<Arc<ClientConfig>, TlsError> {
    let inner = nasvisor_tls::webpki_server_verifier(roots(pki)?)
        .map_err(|e| TlsError::Identity(e.to_string()))?;
    let pinned = PinnedPeer { inner, check, seen };
    let mut config = nasvisor_tls::client_builder_checked("cluster member key pin", pinned)?
        .with_client_auth_cert(
            pki.node_chain().map_err(TlsError::Identity)?,
            pki.node_key().map_err(TlsError::Identity)?,
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration of a joining host: the server must chain to
/// the CA with SHA-256 fingerprint `ca_fingerprint` (lower-case hex) and be
/// valid for [`JOIN_NAME`]. No client certificate.
pub fn join_client_config(ca_fingerprint: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let pin = ca_fingerprint.to_ascii_lowercase();
    let mut config =
        nasvisor_tls::client_builder_checked("join token CA pin", move |p: &Presented<'_>| {
            pinned_ca(&pin, p)
        })?
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The node id and key pin of the peer on an accepted connection (from its
/// verified client certificate).
pub fn peer_of(conn: &rustls::ServerConnection) -> Option<(NodeId, String)> {
    peer_identity(conn.peer_certificates()?.first()?).ok()
}

/// WebPKI verification against the cluster CA, then the admission check
/// on the node id and key in the certificate.
struct MemberVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    admit: KeyCheck,
}

impl std::fmt::Debug for MemberVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for MemberVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (id, key) = peer_identity(end_entity).map_err(|reason| {
            tracing::warn!(reason, "refused a cluster peer");
            rustls::Error::General(reason.into())
        })?;
        match (self.admit)(id, &key) {
            Admission::Refused(why) => {
                tracing::warn!(node_id = id, %key, reason = %why, "refused a cluster peer");
                Err(rustls::Error::General(why.to_string()))
            }
            _ => Ok(ok),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// WebPKI verification of a member's server certificate against the cluster
/// CA and the expected `node-<id>` name, then the key recorded for that
/// node.
struct PinnedPeer {
    inner: Arc<WebPkiServerVerifier>,
    check: KeyCheck,
    seen: KeySeen,
}

impl ServerCheck for PinnedPeer {
    fn check(&self, p: &Presented<'_>) -> Result<(), rustls::Error> {
        self.inner.verify_server_cert(
            p.end_entity,
            p.intermediates,
            p.server_name,
            p.ocsp_response,
            p.now,
        )?;
        let expected = match p.server_name {
            ServerName::DnsName(n) => node_id_of_name(n.as_ref()),
            _ => None,
        };
        let (id, key) =
            peer_identity(p.end_entity).map_err(|r| rustls::Error::General(r.into()))?;
        if expected != Some(id) {
            return Err(rustls::Error::General(format!(
                "the server's certificate is for node {id}, not for {:?}",
                p.server_name
            )));
        }
        match (self.check)(id, &key) {
            Admission::Admitted => Ok(()),
            Admission::Unpinned => {
                (self.seen)(id, key);
                Ok(())
            }
            Admission::Refused(why) => {
                tracing::warn!(node_id = id, %key, reason = %why, "refused a cluster server");
                Err(rustls::Error::General(why.to_string()))
            }
        }
    }
}

/// Trusts the CA certificate the server sends if its fingerprint is the
/// pinned one, then verifies the server's certificate against it.
fn pinned_ca(pin: &str, p: &Presented<'_>) -> Result<(), rustls::Error> {
    let ca = p
        .intermediates
        .iter()
        .find(|c| fingerprint(c) == pin)
        .ok_or_else(|| {
            rustls::Error::General(
                "the server's CA does not match the fingerprint in the join token".into(),
            )
        })?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned())?;
    let verifier = nasvisor_tls::webpki_server_verifier(roots)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    verifier.verify_server_cert(p.end_entity, &[], p.server_name, p.ocsp_response, p.now)?;
    Ok(())
}

/// The server name a joining host connects to.
pub fn join_server_name() -> ServerName<'static> {
    ServerName::try_from(JOIN_NAME).expect("a valid DNS name")
}
