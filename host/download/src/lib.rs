//! The HTTP(S) downloader of nasvisord's image imports: ureq 2 over rustls
//! (the shared provider of [`nasvisor_tls`]), implementing
//! [`nasvisor_storage::Downloader`].
//!
//! It only carries bytes: one GET, no redirect followed, the answer
//! returned whatever its status, the connect and read timeouts it is given
//! applied to the socket, the server's certificate verified against the
//! trusted roots (Mozilla's, from `webpki-roots`, unless others are
//! given). What is allowed (schemes, redirects, sizes, the SHA-256) is
//! decided by [`nasvisor_storage::fetch_url`], so storage and the core
//! above it compile no HTTP or TLS stack; the daemon builds an
//! [`HttpDownloader`] and hands it to the core.

use nasvisor_storage::{Downloader, RequestLimits, Response, TransportError};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// Errors while setting the downloader up.
#[derive(Debug, thiserror::Error)]
pub enum DownloadSetupError {
    /// rustls refused the configuration.
    #[error("image downloader TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Downloads over HTTP/1.1, and HTTPS with rustls.
#[derive(Debug, Clone)]
pub struct HttpDownloader {
    tls: Arc<ClientConfig>,
}

impl HttpDownloader {
    /// A downloader that trusts the usual public roots (Mozilla's).
    pub fn new() -> Result<HttpDownloader, DownloadSetupError> {
        HttpDownloader::with_roots(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    }

    /// A downloader that trusts only `roots` (a vendor's or a test's CA).
    pub fn with_roots(roots: RootCertStore) -> Result<HttpDownloader, DownloadSetupError> {
        let tls = nasvisor_tls::client_config_builder()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpDownloader { tls: Arc::new(tls) })
    }
}

impl Downloader for HttpDownloader {
    fn get(&self, url: &str, limits: &RequestLimits) -> Result<Response, TransportError> {
        let agent = ureq::AgentBuilder::new()
            .tls_config(self.tls.clone())
            .timeout_connect(limits.connect_timeout)
            .timeout_read(limits.read_timeout)
            .redirects(0)
            .build();
        let resp = match agent.get(url).call() {
            // A status of 400 or more is an answer too: storage decides.
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => return Err(TransportError(Box::new(t))),
        };
        let mut names = resp.headers_names();
        names.sort();
        names.dedup();
        let headers = names
            .iter()
            .flat_map(|n| resp.all(n).into_iter().map(|v| (n.clone(), v.to_string())))
            .collect();
        Ok(Response {
            status: resp.status(),
            headers,
            body: Box::new(resp.into_reader()),
        })
    }
}
