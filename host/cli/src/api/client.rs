//! The HTTPS client of nasvisord's admin API: ureq 2 over rustls, with the
//! server certificate trusted from a CA file or pinned by its SHA-256
//! fingerprint (never unverified), and the admin token as a bearer token.

use super::target::Target;
use crate::config::{ConfigError, Token};
use nasvisor_api_types::{fingerprint, ErrorView};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed command: what the user sees on stderr, after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API refused the request (or, with status 0, the CLI refused it
    /// with the API's own rules before sending it).
    #[error("{}", api_text(*status, field.as_deref(), reason))]
    Api {
        /// HTTP status; 0 when checked locally.
        status: u16,
        /// The request field at fault.
        field: Option<String>,
        /// Why.
        reason: String,
    },
    /// Anything else (connection, TLS, local input, ...), one line.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// A local error.
    pub fn msg(m: impl Into<String>) -> Self {
        CliError::Other(m.into())
    }

    /// Whether asking again later may succeed: no answer at all (the host
    /// is away: restarting, rebooting), or 503 (no quorum for a moment).
    pub fn is_transient(&self) -> bool {
        match self {
            CliError::Api { status, .. } => *status == 503,
            CliError::Other(_) => true,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Other(e.to_string())
    }
}

/// `field: reason (HTTP status)`; without the status when checked locally,
/// without the field when the error is not about one.
fn api_text(status: u16, field: Option<&str>, reason: &str) -> String {
    let mut s = match field.filter(|f| !f.is_empty()) {
        Some(field) => format!("{field}: {reason}"),
        None => reason.to_string(),
    };
    if status != 0 {
        s.push_str(&format!(" (HTTP {status})"));
    }
    s
}

/// The result of a command.
pub type CliResult<T> = Result<T, CliError>;

/// A connected (configured) API client.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    /// `None` only for the login, which needs none.
    token: Option<Token>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// How the server's certificate is trusted: never not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// Exactly the certificate with this SHA-256 fingerprint (`AA:BB:...`).
    Pin(String),
    /// The PEM certificates (CAs or the server's own) of a file; `what`
    /// says where it was given, for errors (`--ca-cert`, `remote nas1`).
    CaFile {
        /// The file.
        path: PathBuf,
        /// Where it was given.
        what: String,
    },
}

/// Accepts exactly the server certificate with the pinned fingerprint (the
/// shared verifier still checks the handshake signatures against it).
fn pinned_cert(pin: String) -> impl nasvisor_tls::ServerCheck {
    move |p: &nasvisor_tls::Presented<'_>| {
        let got = fingerprint(p.end_entity.as_ref());
        if got == pin {
            Ok(())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {got} does not match the pinned {pin}"
            )))
        }
    }
}

fn roots_from(path: &Path, what: &str) -> CliResult<rustls::RootCertStore> {
    let pem = std::fs::read(path)
        .map_err(|e| CliError::msg(format!("{what} {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| {
            CliError::msg(format!(
                "{what} {}: not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        roots.add(c).map_err(|e| {
            CliError::msg(format!(
                "{what} {}: unusable certificate: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(CliError::msg(format!(
            "{what} {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(roots)
}

/// Checks that `path` holds a usable PEM certificate (for a remote's CA
/// file, before it is stored).
pub fn check_ca_file(path: &Path, what: &str) -> CliResult<()> {
    roots_from(path, what).map(drop)
}

fn tls_setup(e: rustls::Error) -> CliError {
    CliError::msg(format!("TLS setup: {e}"))
}

fn tls_config(trust: &ServerTrust) -> CliResult<rustls::ClientConfig> {
    Ok(match trust {
        ServerTrust::Pin(pin) => {
            nasvisor_tls::client_builder_checked("pinned fingerprint", pinned_cert(pin.clone()))
                .map_err(tls_setup)?
                .with_no_client_auth()
        }
        ServerTrust::CaFile { path, what } => nasvisor_tls::client_config_builder()
            .map_err(tls_setup)?
            .with_root_certificates(roots_from(path, what)?)
            .with_no_client_auth(),
    })
}

fn agent(tls: rustls::ClientConfig) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .timeout_connect(CONNECT_TIMEOUT)
        .user_agent(concat!("nasvisor-cli/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The SHA-256 fingerprint (`AA:BB:...`) of the certificate `endpoint`
/// presents, for the user to compare with the one nasvisord printed. The
/// handshake is ended as soon as the certificate is seen: nothing is sent.
pub fn server_fingerprint(endpoint: &str) -> CliResult<String> {
    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let record = seen.clone();
    let check = move |p: &nasvisor_tls::Presented<'_>| {
        if let Ok(mut s) = record.lock() {
            *s = Some(fingerprint(p.end_entity.as_ref()));
        }
        Err(rustls::Error::General("certificate not trusted yet".into()))
    };
    let tls = nasvisor_tls::client_builder_checked("certificate fetch", check)
        .map_err(tls_setup)?
        .with_no_client_auth();
    let endpoint = endpoint.trim_end_matches('/');
    let r = agent(tls)
        .get(&format!("{endpoint}/api/v1/host"))
        .timeout(REQUEST_TIMEOUT)
        .call();
    if let Some(fp) = seen.lock().ok().and_then(|s| s.clone()) {
        return Ok(fp);
    }
    Err(match r {
        Err(ureq::Error::Transport(t)) => transport_error(endpoint, &t),
        _ => CliError::msg(format!("{endpoint} presented no certificate")),
    })
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string (`?k=v&...`) of the given pairs; empty without pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("?{}", q.join("&"))
}

/// `cannot talk to ENDPOINT: why`, with the causes that add something.
fn transport_error(endpoint: &str, e: &ureq::Transport) -> CliError {
    let mut why = e.kind().to_string();
    if let Some(m) = e.message() {
        why.push_str(": ");
        why.push_str(m);
    }
    if let Some(src) = std::error::Error::source(e) {
        let chain = error_chain(src);
        if !why.contains(&chain) {
            why.push_str(": ");
            why.push_str(&chain);
        }
    }
    CliError::msg(format!("cannot talk to {endpoint}: {why}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

impl Client {
    /// A client of `target`; fails (before any connection) when its trust
    /// cannot be set up.
    pub fn new(target: &Target) -> CliResult<Self> {
        Ok(Self {
            agent: agent(tls_config(&target.trust)?),
            endpoint: target.endpoint.clone(),
            token: Some(target.token.clone()),
        })
    }

    /// A client that sends no credential (for the login), trusting the
    /// server as `trust` says.
    pub fn anonymous(endpoint: &str, trust: &ServerTrust) -> CliResult<Self> {
        Ok(Self {
            agent: agent(tls_config(trust)?),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
        })
    }

    /// This client with `token` as its credential.
    pub fn with_token(&self, token: Token) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = self
            .agent
            .request(method, &format!("{}{path}", self.endpoint));
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {}", t.expose())),
            None => r,
        }
    }

    fn finish(&self, r: Result<ureq::Response, ureq::Error>) -> CliResult<ureq::Response> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                Err(match serde_json::from_str::<ErrorView>(&body) {
                    Ok(ErrorView { error }) => CliError::Api {
                        status,
                        field: error.field,
                        reason: error.reason,
                    },
                    Err(_) => CliError::Api {
                        status,
                        field: None,
                        reason: if body.trim().is_empty() {
                            "no reason given".into()
                        } else {
                            body.trim().chars().take(300).collect()
                        },
                    },
                })
            }
            Err(ureq::Error::Transport(t)) => Err(transport_error(&self.endpoint, &t)),
        }
    }

    /// The answer of `path` read as a `T`; an answer without content (204)
    /// reads as JSON `null` (`()`, or `None` of an `Option`).
    fn answer<T: DeserializeOwned>(&self, path: &str, resp: ureq::Response) -> CliResult<T> {
        let mut body = String::new();
        if resp.status() != 204 {
            resp.into_reader().read_to_string(&mut body).map_err(|e| {
                CliError::msg(format!("reading the answer of {}: {e}", self.endpoint))
            })?;
        }
        let body = if body.trim().is_empty() {
            "null"
        } else {
            &body
        };
        serde_json::from_str(body).map_err(|e| {
            CliError::msg(format!(
                "the answer of {}{} cannot be read: {e}",
                self.endpoint,
                path.split('?').next().unwrap_or(path)
            ))
        })
    }

    /// `method path` without a body; the answer as a `T`.
    pub fn call<T: DeserializeOwned>(&self, method: &str, path: &str) -> CliResult<T> {
        let r = self.request(method, path).timeout(REQUEST_TIMEOUT).call();
        let resp = self.finish(r)?;
        self.answer(path, resp)
    }

    /// `GET path`, the answer as a `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.call("GET", path)
    }

    /// `method path` with `body` as JSON; the answer as a `T`.
    pub fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> CliResult<T> {
        let body = serde_json::to_string(body)
            .map_err(|e| CliError::msg(format!("the request body cannot be written: {e}")))?;
        let r = self
            .request(method, path)
            .timeout(REQUEST_TIMEOUT)
            .set("Content-Type", "application/json")
            .send_string(&body);
        let resp = self.finish(r)?;
        self.answer(path, resp)
    }

    /// `GET path`, the answer body as a reader (no overall timeout: for
    /// streams that last).
    pub fn stream(&self, path: &str) -> CliResult<Box<dyn Read + Send + Sync + 'static>> {
        let resp = self.finish(self.request("GET", path).call())?;
        Ok(resp.into_reader())
    }

    /// `POST path` with a raw body read from `body` (`len` bytes), streamed.
    /// The token and the server's trust are checked first with a cheap
    /// request, so that a refusal is not discovered only after sending
    /// gigabytes (and then only as a reset connection).
    pub fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        body: impl Read,
        len: u64,
    ) -> CliResult<T> {
        self.get::<IgnoredAny>("/api/v1/images")?;
        let r = self
            .request("POST", path)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &len.to_string())
            .send(body);
        let resp = match self.finish(r) {
            Err(CliError::Other(m)) => {
                return Err(CliError::Other(format!(
                    "{m} (the server stopped reading the upload: it may have refused it, \
                     e.g. an image of that name exists or the file is over its upload limit; \
                     see `nasvisor image list` and `nasvisor event list`)"
                )))
            }
            other => other?,
        };
        self.answer(path, resp)
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}
