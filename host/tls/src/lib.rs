//! The one rustls setup of nasvisor, shared by the admin endpoint
//! (`nasvisor-api`), its CLI client, the cluster transport
//! (`nasvisor-cluster-net`) and the image downloader (`nasvisor-download`).
//!
//! - [`provider`]: ring, the only crypto provider. Every configuration is
//!   built on it explicitly, never on a process-wide default.
//! - [`server_config_builder`] and [`client_config_builder`]: rustls
//!   builders on that provider with its safe default protocol versions
//!   (TLS 1.3 and 1.2).
//! - [`webpki_server_verifier`]: standard WebPKI verification of a server
//!   (chain to the given roots, validity, name) with the same provider.
//! - [`CheckedServer`]: a server-certificate verifier for the cases
//!   WebPKI alone does not cover. The caller's [`ServerCheck`] decides
//!   whether the presented certificate is the right one (a pinned
//!   fingerprint, a pinned key, a pinned CA), and the verifier checks the
//!   handshake signatures against that certificate with the provider's
//!   algorithms, so a check never has to (and cannot forget to).
//!   [`client_builder_checked`] makes a client configuration with it.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WantsClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, WantsVerifier,
};

pub use rustls::client::VerifierBuilderError;

/// The crypto provider of every TLS configuration: ring's defaults (cipher
/// suites, key exchange groups, signature algorithms). One instance per
/// process.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A server configuration builder on [`provider`], TLS 1.3 and 1.2.
pub fn server_config_builder() -> Result<ConfigBuilder<ServerConfig, WantsVerifier>, rustls::Error>
{
    ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()
}

/// A client configuration builder on [`provider`], TLS 1.3 and 1.2.
pub fn client_config_builder() -> Result<ConfigBuilder<ClientConfig, WantsVerifier>, rustls::Error>
{
    ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()
}

/// WebPKI verification of servers against `roots`, on [`provider`].
pub fn webpki_server_verifier(
    roots: impl Into<Arc<RootCertStore>>,
) -> Result<Arc<WebPkiServerVerifier>, VerifierBuilderError> {
    WebPkiServerVerifier::builder_with_provider(roots.into(), provider()).build()
}

/// The server's certificate as the handshake presents it, for a
/// [`ServerCheck`].
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The server's own certificate.
    pub end_entity: &'a CertificateDer<'a>,
    /// The rest of the chain the server sent.
    pub intermediates: &'a [CertificateDer<'a>],
    /// The name the client connected to.
    pub server_name: &'a ServerName<'a>,
    /// The stapled OCSP response (empty when none).
    pub ocsp_response: &'a [u8],
    /// The time of the check.
    pub now: UnixTime,
}

/// Decides whether a presented server certificate is the right one. On
/// `Ok` the handshake goes on, and [`CheckedServer`] then verifies the
/// handshake signatures against that certificate. A plain function or
/// closure over a [`Presented`] is a check.
pub trait ServerCheck: Send + Sync {
    /// `Ok` when `cert` is the server's expected certificate; the error
    /// says why not (it ends the handshake).
    fn check(&self, cert: &Presented<'_>) -> Result<(), rustls::Error>;
}

impl<F> ServerCheck for F
where
    F: Fn(&Presented<'_>) -> Result<(), rustls::Error> + Send + Sync,
{
    fn check(&self, cert: &Presented<'_>) -> Result<(), rustls::Error> {
        self(cert)
    }
}

/// A server-certificate verifier made of a [`ServerCheck`] and the
/// provider's handshake-signature verification.
pub struct CheckedServer {
    /// What the check is, for `Debug` ("pinned fingerprint", ...).
    what: &'static str,
    check: Box<dyn ServerCheck>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for CheckedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedServer")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl CheckedServer {
    /// A verifier that accepts a server when `check` does; `what` names the
    /// check in `Debug` output.
    pub fn new(what: &'static str, check: impl ServerCheck + 'static) -> Arc<CheckedServer> {
        Arc::new(CheckedServer {
            what,
            check: Box::new(check),
            provider: provider(),
        })
    }
}

impl ServerCertVerifier for CheckedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check.check(&Presented {
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        })?;
        Ok(ServerCertVerified::assertion())
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration builder whose servers are verified by `check`
/// (through [`CheckedServer`]); the caller adds its client certificate or
/// none.
pub fn client_builder_checked(
    what: &'static str,
    check: impl ServerCheck + 'static,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    Ok(client_config_builder()?
        .dangerous()
        .with_custom_certificate_verifier(CheckedServer::new(what, check)))
}
