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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
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

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(pki: &Pki) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert_der().clone())?;
    Ok(Arc::new(roots))
}

/// The server configuration for peers: mutual TLS, cluster CA, admitted
/// node ids with their recorded keys only.
pub fn peer_server_config(pki: &Pki, admit: KeyCheck) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let inner =
        WebPkiClientVerifier::builder_with_provider(roots(pki)?, provider.clone()).build()?;
    let verifier = Arc::new(MemberVerifier { inner, admit });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
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
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
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
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(pki)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Identity(e.to_string()))?;
    let verifier = Arc::new(PinnedPeer { inner, check, seen });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
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
    let provider = provider();
    let verifier = Arc::new(PinnedCa {
        fingerprint: ca_fingerprint.to_ascii_lowercase(),
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
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

impl std::fmt::Debug for PinnedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedPeer").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinnedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let expected = match server_name {
            ServerName::DnsName(n) => node_id_of_name(n.as_ref()),
            _ => None,
        };
        let (id, key) = peer_identity(end_entity).map_err(|r| rustls::Error::General(r.into()))?;
        if expected != Some(id) {
            return Err(rustls::Error::General(format!(
                "the server's certificate is for node {id}, not for {server_name:?}"
            )));
        }
        match (self.check)(id, &key) {
            Admission::Admitted => Ok(ok),
            Admission::Unpinned => {
                (self.seen)(id, key);
                Ok(ok)
            }
            Admission::Refused(why) => {
                tracing::warn!(node_id = id, %key, reason = %why, "refused a cluster server");
                Err(rustls::Error::General(why.to_string()))
            }
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

/// Trust the CA certificate the server sends if its fingerprint is the
/// pinned one, then verify the server's certificate against it.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not match the fingerprint in the join token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server name a joining host connects to.
pub fn join_server_name() -> ServerName<'static> {
    ServerName::try_from(JOIN_NAME).expect("a valid DNS name")
}
