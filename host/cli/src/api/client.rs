//! The HTTPS client of nasvisord's admin API: ureq 2 over rustls, with the
//! server certificate trusted from a CA file or pinned by its SHA-256
//! fingerprint (never unverified), and the admin token as a bearer token.

use clap::Args;
use nasvisor_api_types::ErrorView;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Default endpoint of nasvisord.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:8443";
/// Default data directory of nasvisord (its certificate is `tls/cert.pem` in it).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nasvisor";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach and authenticate to nasvisord (global options).
#[derive(Debug, Clone, Args)]
pub struct ApiOpts {
    /// nasvisord's admin endpoint.
    #[arg(long, global = true, env = "NASVISOR_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// The admin token (printed by nasvisord on its first start).
    #[arg(long, global = true, env = "NASVISOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token.
    #[arg(long, global = true, env = "NASVISOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM certificate (CA or the server's own) to trust.
    #[arg(long, global = true, env = "NASVISOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Pin the server certificate by its SHA-256 fingerprint (hex, colons optional,
    /// as nasvisord prints it).
    #[arg(long, global = true, env = "NASVISOR_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// nasvisord's data directory; its tls/cert.pem is trusted when neither
    /// --ca-cert nor --fingerprint is given.
    #[arg(long, global = true, env = "NASVISOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print the API's answers as JSON (its typed views) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

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
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Normalizes a SHA-256 fingerprint (`AA:BB:..`, `aabb..`) to lower-case hex.
pub fn normalize_fingerprint(fp: &str) -> CliResult<String> {
    let hex: String = fp
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::msg(format!(
            "--fingerprint: {fp:?} is not a SHA-256 fingerprint: give 64 hex digits, \
             colons optional (as nasvisord prints it: AA:BB:...)"
        )));
    }
    Ok(hex)
}

/// The fingerprint of a DER certificate in nasvisord's format (`AA:BB:...`).
pub use nasvisor_api_types::fingerprint;

/// Accepts exactly the server certificate with the pinned fingerprint (the
/// shared verifier still checks the handshake signatures against it).
fn pinned_cert(pin: String) -> impl nasvisor_tls::ServerCheck {
    move |p: &nasvisor_tls::Presented<'_>| {
        let got = hex_lower(&Sha256::digest(p.end_entity.as_ref()));
        if got == pin {
            Ok(())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {} does not match the pinned {}",
                fingerprint(p.end_entity.as_ref()),
                colon_upper(&pin)
            )))
        }
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn colon_upper(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
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

fn tls_config(opts: &ApiOpts) -> CliResult<rustls::ClientConfig> {
    let tls_setup = |e: rustls::Error| CliError::msg(format!("TLS setup: {e}"));
    if opts.ca_cert.is_some() && opts.fingerprint.is_some() {
        return Err(CliError::msg(
            "give either --ca-cert or --fingerprint, not both",
        ));
    }
    if let Some(fp) = &opts.fingerprint {
        let pin = normalize_fingerprint(fp)?;
        return Ok(
            nasvisor_tls::client_builder_checked("pinned fingerprint", pinned_cert(pin))
                .map_err(tls_setup)?
                .with_no_client_auth(),
        );
    }
    let roots = match &opts.ca_cert {
        Some(ca) => roots_from(ca, "--ca-cert")?,
        None => {
            let default = opts.data_dir.join("tls/cert.pem");
            if !default.is_file() {
                return Err(CliError::msg(format!(
                    "cannot verify {}: no --ca-cert or --fingerprint given and {} does not exist \
                     (give the server certificate with --ca-cert / NASVISOR_CA_CERT, or pin the \
                     fingerprint nasvisord prints at start with --fingerprint / NASVISOR_FINGERPRINT)",
                    opts.endpoint,
                    default.display()
                )));
            }
            roots_from(&default, "server certificate")?
        }
    };
    Ok(nasvisor_tls::client_config_builder()
        .map_err(tls_setup)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_token(opts: &ApiOpts) -> CliResult<String> {
    let token = match (&opts.token, &opts.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| CliError::msg(format!("--token-file {}: {e}", f.display())))?
            .trim()
            .to_string(),
        (None, None) => {
            return Err(CliError::msg(
                "no admin token: give --token or --token-file, or set NASVISOR_TOKEN or \
                 NASVISOR_TOKEN_FILE (nasvisord prints the token once, on its first start)",
            ))
        }
    };
    if token.is_empty() {
        return Err(CliError::msg("the admin token is empty"));
    }
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(CliError::msg(
            "the admin token contains spaces or control characters",
        ));
    }
    Ok(token)
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
    /// Builds a client from the global options: endpoint, token and trust.
    /// Fails (before any connection) when the token or the trust is missing.
    pub fn new(opts: &ApiOpts) -> CliResult<Self> {
        let endpoint = opts.endpoint.trim_end_matches('/').to_string();
        let lower = endpoint.to_ascii_lowercase();
        if !lower.starts_with("https://") {
            return Err(CliError::msg(format!(
                "--endpoint {endpoint:?}: must be an https:// URL (nasvisord serves HTTPS only)"
            )));
        }
        let token = read_token(opts)?;
        let tls = tls_config(opts)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout_connect(CONNECT_TIMEOUT)
            .user_agent(concat!("nasvisor-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            agent,
            endpoint,
            token,
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.endpoint))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    fn transport_error(&self, e: &ureq::Transport) -> CliError {
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
        CliError::msg(format!("cannot talk to {}: {why}", self.endpoint))
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
            Err(ureq::Error::Transport(t)) => Err(self.transport_error(&t)),
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
