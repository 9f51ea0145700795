//! The HTTPS server: hyper 1 over tokio-rustls. Plain HTTP is never served.
//!
//! Order of checks for each request: the web console's files
//! ([`crate::console_ui`]: `GET /` and the `/ui/...` paths it lists, no data
//! in them), `/healthz` and the login answer without a credential;
//! everything else first needs one the core accepts
//! (an API token or a session, see [`crate::auth`]; 401 with
//! `WWW-Authenticate: Bearer` otherwise, even for unknown paths, so nothing
//! is revealed unauthenticated), then the route (404/405), the route's role
//! (403), a cookie session's CSRF header (403), the body (415/413/400), and
//! only then is the [`Action`] forwarded to the core with its caller. Every
//! change asked by an authenticated caller, and every login checked, is
//! then written to the audit log with its answer's status
//! ([`Core::audit`]).
//! The core answers with a typed [`Answer`]; this is the one place it
//! becomes the JSON body ([`Answer::to_json_bytes`]).
//!
//! Three routes stream instead of answering with one JSON value: the console
//! (`GET /api/v1/vms/{id}/console`, a chunked `application/octet-stream`
//! answer fed by [`Core::console`]), the image upload
//! (`POST /api/v1/images/{name}/upload`, whose raw body is handed to
//! [`Core::upload_image`] as it arrives, never buffered whole, limited by
//! [`ServerSettings::max_upload`] instead of `max_body`) and the firmware
//! install (`POST /api/v1/host/firmware/install`, the same way to
//! [`Core::install_firmware`], limited by [`ServerSettings::max_firmware`]).
//!
//! Every connection is held to [`ServerSettings::limits`] (see
//! [`nasvisor_limits`]): beyond the connection caps a new connection is
//! closed at once; the TLS handshake, the request head and each pause in a
//! request body have timeouts (a stalled body gets `408`, and a stalled
//! upload ends the core's import, which removes what it had received); a
//! connection with no request in progress that stays silent is closed.

use crate::auth;
use crate::console_ui;
use crate::router::{self, HEALTH_PATH, LOGIN_PATH};
use crate::tls::{self, TlsError, TlsIdentity, TlsSettings};
use bytes::Bytes;
use futures_core::Stream;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use nasvisor_api_types::{ApiError, AuditEntry, Caller, CoreError, Login, Validate};
use nasvisor_api_types::{ByteStream, Core, Credential};
use nasvisor_limits::{BodyStalled, ConnectionGate, ReadError, ServerLimits, TimedBody};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Default largest request body (1 MiB).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Largest login body.
const MAX_LOGIN_BODY: usize = 4096;
/// Default largest image upload (64 GiB).
pub const DEFAULT_MAX_UPLOAD: u64 = 64 * 1024 * 1024 * 1024;
/// Default largest firmware bundle upload (4 GiB).
pub const DEFAULT_MAX_FIRMWARE: u64 = 4 * 1024 * 1024 * 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to run the endpoint.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where a generated certificate lives.
    pub data_dir: PathBuf,
    /// TLS identity settings.
    pub tls: TlsSettings,
    /// Largest JSON request body, bytes.
    pub max_body: usize,
    /// Largest image upload (`POST /api/v1/images/{name}/upload`), bytes.
    pub max_upload: u64,
    /// Largest firmware bundle (`POST /api/v1/host/firmware/install`),
    /// bytes.
    pub max_firmware: u64,
    /// Connection caps and timeouts.
    pub limits: ServerLimits,
}

impl ServerSettings {
    /// Settings with defaults: generated certificate, 1 MiB bodies.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            tls: TlsSettings::default(),
            max_body: DEFAULT_MAX_BODY,
            max_upload: DEFAULT_MAX_UPLOAD,
            max_firmware: DEFAULT_MAX_FIRMWARE,
            limits: ServerLimits::default(),
        }
    }
}

/// Errors while starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS identity.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A limit is unusable (names the setting).
    #[error("admin endpoint limits: {0}")]
    Limits(#[from] nasvisor_limits::LimitError),
    /// Binding the listen address.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

struct Shared {
    core: Arc<dyn Core>,
    /// The certificate served (the certificate routes read and replace it).
    certificate: Arc<tls::CertStore>,
    max_body: usize,
    max_upload: u64,
    max_firmware: u64,
    body_timeout: Duration,
}

/// A bound, not yet serving, endpoint.
pub struct Server {
    listener: TcpListener,
    tls: TlsIdentity,
    shared: Arc<Shared>,
    limits: Arc<ServerLimits>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("fingerprint", &self.tls.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads (or on first start creates) the TLS identity and binds the
    /// listen address.
    pub async fn bind(settings: ServerSettings, core: Arc<dyn Core>) -> Result<Self, ServerError> {
        settings.limits.check()?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let tls = tls::load_or_generate(&settings.data_dir, &settings.tls)?;
        let certificate = tls.store.clone();
        Ok(Self {
            listener,
            tls,
            shared: Arc::new(Shared {
                certificate,
                core,
                max_body: settings.max_body,
                max_upload: settings.max_upload,
                max_firmware: settings.max_firmware,
                body_timeout: settings.limits.body_timeout,
            }),
            limits: Arc::new(settings.limits),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The TLS identity in use.
    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    /// The lines the daemon prints at start: the certificate fingerprint,
    /// and on first start the bootstrap admin token the core created.
    pub fn startup_banner(&self, bootstrap_token: Option<String>) -> String {
        let mut s = format!(
            "nasvisor admin endpoint: https://{}\nTLS certificate SHA-256 fingerprint: {}\n",
            self.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            self.tls.fingerprint
        );
        if let Some(t) = bootstrap_token {
            s.push_str(&format!("admin token (shown once, store it now): {t}\n"));
        }
        s
    }

    /// Serves until `shutdown` completes, then stops accepting, lets open
    /// requests finish (up to 10 s) and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let acceptor = TlsAcceptor::from(self.tls.server_config.clone());
        let limits = self.limits.clone();
        let gate = ConnectionGate::new(
            "admin",
            limits.max_connections,
            limits.max_connections_per_address,
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut conns = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = gate.admit(peer.ip()) else {
                continue; // closed at once (logged by the gate)
            };
            let acceptor = acceptor.clone();
            let shared = self.shared.clone();
            let limits = limits.clone();
            let mut stopped = stopped.clone();
            conns.spawn(async move {
                let _permit = permit;
                let stream =
                    match nasvisor_limits::handshake(&limits, acceptor.accept(tcp)).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake");
                            return;
                        }
                    };
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&shared, peer, req).await) }
                });
                let stop = async move {
                    // Err only when the sender is gone, which also means stop.
                    let _ = stopped.wait_for(|s| *s).await;
                };
                match nasvisor_limits::serve_http1(stream, svc, &limits, stop).await {
                    Err(e) if e.is_header_timeout() => {
                        tracing::info!(%peer, error = %e, "request head too slow; connection closed")
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "connection closed"),
                    Ok(()) => {}
                }
            });
        }
        drop(self.listener);
        // Err only when no connection is left to tell: nothing to stop.
        let _ = stop.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!("shutdown: open connections did not finish in time");
        }
        Ok(())
    }
}

/// The body of every answer: one JSON value, nothing, or a stream.
type RespBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(b: Bytes) -> RespBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<RespBody> {
    json_bytes_response(status, serde_json::to_vec(body))
}

/// A JSON answer from its serialized bytes; a value that could not be
/// serialized is a bug of the server or the core (500).
fn json_bytes_response(
    status: StatusCode,
    bytes: Result<Vec<u8>, serde_json::Error>,
) -> Response<RespBody> {
    let (status, bytes) = match bytes {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(error = %e, "an answer cannot be serialized");
            let err = ApiError::status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "an answer cannot be serialized",
            );
            (
                err.status,
                serde_json::to_vec(&err.body()).unwrap_or_default(),
            )
        }
    };
    let mut resp = Response::new(full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError, path: &str) -> Response<RespBody> {
    let mut resp = json_response(e.status, &e.body());
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"nasvisor\""),
        );
    }
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        if let Ok(v) = HeaderValue::from_str(&router::allowed_methods(path).join(", ")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
    }
    resp
}

fn has_content_type(req: &Request<Incoming>, mime: &str) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime))
}

fn is_json(req: &Request<Incoming>) -> bool {
    has_content_type(req, "application/json")
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// What the audit log needs of a request besides its answer.
struct Audited {
    user: String,
    caller: Option<Caller>,
    operation: &'static str,
    request: String,
}

async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut audited = None;
    // The route's operation and method, for the metrics: bounded label
    // values (never the path or a client's method as sent).
    let mut labels = ("unmatched", "other");
    let (resp, result) = match respond(shared, peer, req, &mut audited, &mut labels).await {
        Ok(r) => (r, "ok".to_string()),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(%method, %path, reason = %e.reason, "request failed");
            }
            let result = match &e.field {
                Some(f) => format!("{f}: {}", e.reason),
                None => e.reason.clone(),
            };
            (error_response(&e, &path), result)
        }
    };
    if let Some(a) = audited {
        shared
            .core
            .audit(AuditEntry {
                user: a.user,
                role: a.caller.as_ref().map(|c| c.role),
                credential: a.caller.map(|c| c.credential),
                address: peer.ip(),
                operation: a.operation,
                request: a.request,
                status: resp.status().as_u16(),
                result,
            })
            .await;
    }
    nasvisor_metrics::api_request(
        labels.0,
        labels.1,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    // Never log headers: they carry credentials.
    tracing::info!(%peer, %method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

async fn respond(
    shared: &Shared,
    peer: SocketAddr,
    req: Request<Incoming>,
    audited: &mut Option<Audited>,
    labels: &mut (&'static str, &'static str),
) -> Result<Response<RespBody>, ApiError> {
    let path = req.uri().path().to_string();
    // The web console's files: public, they carry no data.
    if let Some(page) = console_ui::serve(req.method(), &path, req.headers()) {
        *labels = (
            "console",
            if req.method() == Method::HEAD {
                "HEAD"
            } else {
                "GET"
            },
        );
        return Ok(page.map(full));
    }
    if path == HEALTH_PATH {
        *labels = ("health", "GET");
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ApiError::status(StatusCode::METHOD_NOT_ALLOWED, "use GET"));
        }
        return Ok(json_response(
            StatusCode::OK,
            &nasvisor_api_types::HealthView {
                status: nasvisor_api_types::HealthStatus::Ok,
            },
        ));
    }
    if path == LOGIN_PATH {
        // A public route: another method is told so (405), as /healthz's
        // is, not asked for a credential.
        if req.method() != Method::POST {
            return Err(ApiError::status(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
        }
        *labels = ("login", "POST");
        return login(shared, peer, req, audited).await;
    }
    let credential = auth::credential(req.headers())?;
    let by_cookie = matches!(credential, Some(Credential::Cookie(_)));
    let caller = match credential {
        None => return Err(auth::unauthorized("missing bearer token")),
        Some(c) => shared.core.authenticate(c).map_err(ApiError::from)?,
    };
    let matched = router::find(req.method().as_str(), &path)?;
    let route = matched.route;
    *labels = (route.operation, route.method);
    let request = nasvisor_api_types::Request {
        caller,
        address: peer.ip(),
        operation: route.operation,
        method: route.method,
        path: path.clone(),
    };
    if request.is_change() {
        *audited = Some(Audited {
            user: request.caller.user.clone(),
            caller: Some(request.caller.clone()),
            operation: route.operation,
            request: format!("{} {path}", route.method),
        });
    }
    if !route.access.allows(request.caller.role) {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            format!(
                "user {} acting as {} may not {}: it needs the {} role",
                request.caller.user,
                request.caller.role,
                route.operation,
                match route.access {
                    router::Access::Role(r) => r.as_str(),
                    router::Access::Public => "no",
                }
            ),
        ));
    }
    auth::check_csrf(
        &request.caller,
        by_cookie,
        request.is_change(),
        req.headers(),
    )?;
    let query = req.uri().query().map(str::to_string);
    match route.operation {
        "getConsole" => return console(shared, &matched, query.as_deref(), req).await,
        "uploadImage" | "installFirmware" | "startClusterUpdate" => {
            let what = match route.operation {
                "uploadImage" => Upload::Image,
                "installFirmware" => Upload::Firmware,
                _ => Upload::ClusterUpdate,
            };
            let by = request.caller.user.clone();
            return upload(shared, &matched, query.as_deref(), req, what, by).await;
        }
        "getCertificate" => return Ok(json_response(StatusCode::OK, &shared.certificate.view())),
        "getOpenapi" => {
            return Ok(json_bytes_response(
                StatusCode::OK,
                Ok(crate::OPENAPI_JSON.as_bytes().to_vec()),
            ))
        }
        "replaceCertificate" => return replace_certificate(shared, req).await,
        "getMetrics" => {
            let text = nasvisor_metrics::render(&shared.core.metrics());
            let mut r = Response::new(full(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(nasvisor_metrics::CONTENT_TYPE),
            );
            return Ok(r);
        }
        _ => {}
    }
    if route.body && !is_json(&req) {
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let body = read_body(shared.max_body, shared.body_timeout, req).await?;
    let Some(action) = router::to_action(&matched, query.as_deref(), &body)? else {
        return Err(ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no handler for {}", route.operation),
        ));
    };
    tracing::debug!(?action, "forwarding to core");
    let logout = route.operation == "logout";
    let answer = shared.core.handle(&request, action).await?;
    let status = StatusCode::from_u16(route.success).unwrap_or(StatusCode::OK);
    let mut resp = if status == StatusCode::NO_CONTENT {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = status;
        r
    } else {
        // The one place an answer becomes the JSON body.
        json_bytes_response(status, answer.to_json_bytes())
    };
    if logout {
        resp.headers_mut()
            .insert(header::SET_COOKIE, auth::session_clear_cookie());
    }
    Ok(resp)
}

/// `PUT /api/v1/host/certificate`: the endpoint's own TLS identity, which
/// the server holds (no core state): checked, stored, then served to new
/// connections.
async fn replace_certificate(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    if !is_json(&req) {
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let body = read_body(shared.max_body, shared.body_timeout, req).await?;
    let new: nasvisor_api_types::CertificateReplace = router::parse_body(&body)?;
    new.validate()?;
    let view = shared
        .certificate
        .replace(&new.cert_pem, &new.key_pem)
        .map_err(|e| ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(e.field.into()),
            reason: e.reason,
        })?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /api/v1/auth/login`: no credential; a small body; the core
/// checks the password (throttled) and makes the session, which is also
/// set as the session cookie.
async fn login(
    shared: &Shared,
    peer: SocketAddr,
    req: Request<Incoming>,
    audited: &mut Option<Audited>,
) -> Result<Response<RespBody>, ApiError> {
    if !is_json(&req) {
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let body = read_body(MAX_LOGIN_BODY, shared.body_timeout, req).await?;
    let login: Login = router::parse_body(&body)?;
    login.validate()?;
    let user = login.user.clone();
    let session = match shared.core.login(login, peer.ip()).await {
        Ok(s) => s,
        Err(CoreError::Throttled {
            reason,
            retry_after_s,
        }) => {
            // Not audited: a refusal that checked nothing would let a
            // flood of attempts push real entries out of the log.
            tracing::info!(%peer, %user, "login refused: throttled");
            let mut resp = error_response(
                &ApiError::status(StatusCode::TOO_MANY_REQUESTS, reason),
                LOGIN_PATH,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            return Ok(resp);
        }
        Err(e) => {
            *audited = Some(Audited {
                user,
                caller: None,
                operation: "login",
                request: format!("POST {LOGIN_PATH}"),
            });
            return Err(e.into());
        }
    };
    *audited = Some(Audited {
        user,
        caller: None,
        operation: "login",
        request: format!("POST {LOGIN_PATH}"),
    });
    let cookie = auth::session_set_cookie(&session.token);
    let mut resp = json_response(StatusCode::OK, &session);
    if let Some(c) = cookie {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /api/v1/vms/{id}/console`: the core's stream as a chunked answer.
/// When the client goes away, hyper drops the body and with it the stream.
async fn console(
    shared: &Shared,
    matched: &router::Matched,
    query: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let c = router::console_request(matched, query)?;
    // The route takes no body; refuse one rather than ignore it.
    let body = read_body(shared.max_body, shared.body_timeout, req).await?;
    if !body.is_empty() {
        return Err(ApiError::field("body", "this route takes no body"));
    }
    tracing::debug!(id = %c.id, follow = c.follow, tail = c.tail, "console stream");
    let stream = shared.core.console(c.id, c.follow, c.tail).await?;
    let body = StreamBody::new(FrameStream(stream)).boxed_unsync();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Maps a [`ByteStream`] to body frames.
struct FrameStream(ByteStream);

impl Stream for FrameStream {
    type Item = Result<Frame<Bytes>, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .as_mut()
            .poll_next(cx)
            .map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// What a streamed upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// `POST /api/v1/images/{name}/upload`, limited by `max_upload`.
    Image,
    /// `POST /api/v1/host/firmware/install`, limited by `max_firmware`.
    Firmware,
    /// `POST /api/v1/cluster/update`, limited by `max_firmware`.
    ClusterUpdate,
}

/// An upload's path and query, parsed.
enum Parsed {
    Image(nasvisor_api_types::ImageUpload),
    Firmware,
    /// Whether evacuated VMs move back.
    ClusterUpdate(bool),
}

/// A streamed upload (`POST /api/v1/images/{name}/upload`, `POST
/// /api/v1/host/firmware/install`): the request body goes to the core as a
/// stream, counted against the route's limit.
async fn upload(
    shared: &Shared,
    matched: &router::Matched,
    query: Option<&str>,
    req: Request<Incoming>,
    what: Upload,
    by: String,
) -> Result<Response<RespBody>, ApiError> {
    let max = match what {
        Upload::Image => shared.max_upload,
        Upload::Firmware | Upload::ClusterUpdate => shared.max_firmware,
    };
    let too_large = || {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload larger than {max} bytes"),
        )
    };
    let checked = if !has_content_type(&req, "application/octet-stream") {
        Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/octet-stream",
        ))
    } else if content_length(&req).is_some_and(|len| len > max) {
        Err(too_large())
    } else {
        match what {
            Upload::Image => router::upload_request(matched, query).map(Parsed::Image),
            Upload::Firmware => router::firmware_request(matched, query).map(|()| Parsed::Firmware),
            Upload::ClusterUpdate => {
                router::cluster_update_request(matched, query).map(Parsed::ClusterUpdate)
            }
        }
    };
    let parsed = match checked {
        Ok(u) => u,
        Err(e) => {
            drain(req.into_body(), shared.body_timeout);
            return Err(e);
        }
    };
    let exceeded = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    let stream: ByteStream = Box::pin(UploadStream {
        body: TimedBody::new(req.into_body(), shared.body_timeout),
        seen: 0,
        max,
        exceeded: exceeded.clone(),
        stalled: stalled.clone(),
        done: false,
    });
    let result = match parsed {
        Parsed::Image(upload) => {
            tracing::debug!(name = %upload.name, "image upload");
            shared.core.upload_image(upload, stream).await
        }
        Parsed::Firmware => {
            tracing::debug!("firmware bundle upload");
            shared.core.install_firmware(stream).await
        }
        Parsed::ClusterUpdate(move_back) => {
            tracing::debug!(move_back, "cluster update bundle upload");
            shared
                .core
                .start_cluster_update(by, move_back, stream)
                .await
        }
    };
    if exceeded.load(Ordering::SeqCst) {
        return Err(too_large());
    }
    if stalled.load(Ordering::SeqCst) {
        let stall = BodyStalled {
            after: shared.body_timeout,
        };
        tracing::info!(error = %stall, "upload stalled; it was ended");
        return Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            field: Some("body".into()),
            reason: stall.to_string(),
        });
    }
    Ok(json_bytes_response(
        StatusCode::ACCEPTED,
        result?.to_json_bytes(),
    ))
}

/// Most bytes of a refused upload read and discarded, so that a client that
/// sends its whole body before reading the answer (most do) gets the error
/// instead of a reset connection.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;
/// Longest time spent discarding a refused upload.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Discards up to [`DRAIN_MAX`] bytes of `body` in the background; beyond
/// that (or [`DRAIN_TIME`], or a pause of `stall`) the connection is closed.
fn drain(body: Incoming, stall: Duration) {
    tokio::spawn(async move {
        let mut body = TimedBody::new(body, stall);
        let mut seen = 0u64;
        // The drain is bounded on purpose: past DRAIN_TIME the rest is dropped.
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    seen += d.len() as u64;
                    if seen > DRAIN_MAX {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// An upload's body as a [`ByteStream`]: data frames only, an error once
/// more than `max` bytes arrived or once it stalled (and nothing after it).
struct UploadStream {
    body: TimedBody<Incoming>,
    seen: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    done: bool,
}

impl Stream for UploadStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use hyper::body::Body;
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    if let Some(stall) = e.downcast_ref::<BodyStalled>() {
                        self.stalled.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            stall.to_string(),
                        ))));
                    }
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "reading upload: {e}"
                    )))));
                }
                Poll::Ready(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            self.seen += data.len() as u64;
            if self.seen > self.max {
                self.done = true;
                self.exceeded.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("upload larger than {} bytes", self.max),
                ))));
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(data)));
            }
        }
    }
}

async fn read_body(
    max: usize,
    body_timeout: Duration,
    req: Request<Incoming>,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {max} bytes"),
        )
    };
    if content_length(&req).is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    // A pause is bounded, the whole by the size (a login's is small).
    match nasvisor_limits::read_body(req.into_body(), max, body_timeout, false).await {
        Ok(b) => Ok(b),
        Err(ReadError::TooLarge { .. }) => Err(too_large()),
        Err(e @ (ReadError::Stalled(_) | ReadError::TooSlow { .. })) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            field: Some("body".into()),
            reason: e.to_string(),
        }),
        Err(e) => Err(ApiError::status(StatusCode::BAD_REQUEST, e.to_string())),
    }
}
