//! The [`Core`] trait: the one place that acts. The HTTPS server (crate
//! `nasvisor-api`) authenticates each request through it, parses the
//! request into an [`Action`] and forwards it with the caller
//! ([`Request`]) to an implementation of it (crate `nasvisor-core`), which
//! answers with a typed [`Answer`]; the server turns it into the JSON body
//! it sends.

use crate::action::Action;
use crate::body::{ImageUpload, Login, Role};
use crate::error::CoreError;
use crate::view::{Answer, CallerView, CredentialKind, SessionView};
use std::net::IpAddr;

/// An authenticated caller, as the core found it.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// The role the caller acts with: the lower of the user's and the
    /// token's.
    pub role: Role,
    /// How it authenticated.
    pub via: CredentialKind,
    /// The token's id, or the session's short id.
    pub credential: String,
    /// When the credential expires (RFC 3339), `None` when never.
    pub expires_at: Option<String>,
    /// For a session: the CSRF token its cookie requests must send.
    pub csrf: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("via", &self.via)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The API form (`GET /api/v1/auth/whoami`).
    pub fn view(&self) -> CallerView {
        CallerView {
            user: self.user.clone(),
            role: self.role,
            via: self.via,
            credential: self.credential.clone(),
            expires_at: self.expires_at.clone(),
            csrf_token: self.csrf.clone(),
        }
    }
}

/// Who asks what, from where: what the core needs beside the action to
/// check ownership and to write the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The caller.
    pub caller: Caller,
    /// The client's address.
    pub address: IpAddr,
    /// The route's operation (`operationId`).
    pub operation: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// The request's path.
    pub path: String,
}

impl Request {
    /// Whether the request may change something (anything but a read).
    pub fn is_change(&self) -> bool {
        self.method != "GET" && self.method != "HEAD"
    }
}

/// What the audit log records of one request: a change asked of the API
/// (any method but GET) by an authenticated caller, or a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The user (for a login, the name given).
    pub user: String,
    /// The role it acted with; `None` for a login.
    pub role: Option<Role>,
    /// The token's or session's id; `None` for a login.
    pub credential: Option<String>,
    /// The client's address.
    pub address: IpAddr,
    /// The route's operation.
    pub operation: &'static str,
    /// `METHOD path`.
    pub request: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok`, or the error's reason.
    pub result: String,
}

/// A credential as the request carried it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <secret>`: an API token or a session token.
    Bearer(&'a str),
    /// The web console's session cookie.
    Cookie(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Bearer(_) => "Bearer(<redacted>)",
            Credential::Cookie(_) => "Cookie(<redacted>)",
        })
    }
}

/// The core: the one place that acts. The API layer only parses requests into
/// an [`Action`] and forwards it here; it never touches QEMU, storage or the
/// network itself.
#[async_trait::async_trait]
pub trait Core: Send + Sync {
    /// Who `credential` belongs to ([`CoreError::Unauthenticated`] when
    /// nobody: unknown, expired, revoked, or its user disabled). Called for
    /// every request but `/healthz` and the login: it must stay cheap.
    fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, CoreError>;

    /// A login with a password from `address`: a new session, or
    /// [`CoreError::Unauthenticated`] (wrong user or password, said the
    /// same way) or [`CoreError::Throttled`] (too many failures).
    async fn login(&self, login: Login, address: IpAddr) -> Result<SessionView, CoreError>;

    /// Appends a request to the audit log (the server calls it for every
    /// change asked by an authenticated caller, and for every login checked,
    /// once it knows the answer). Never fails nor delays the request: the
    /// entry is written in the background, and one that cannot be written
    /// is reported whole in nasvisord's log.
    async fn audit(&self, entry: AuditEntry);

    /// What `/metrics` reads at scrape time (the figures recorded as they
    /// happen are added by `nasvisor_metrics::render`). Called for each
    /// scrape: reads only, no store write.
    fn metrics(&self) -> nasvisor_metrics::State;

    /// Carries out one action and returns its typed answer: the view of the
    /// response schema of the action's route in `openapi.json`
    /// ([`Answer::Empty`] for a route without content). The server turns it
    /// into the JSON body ([`Answer::to_json`]).
    async fn handle(&self, request: &Request, action: Action) -> Result<Answer, CoreError>;

    /// The serial console of VM `id` (`GET /api/v1/vms/{id}/console`): first
    /// up to `tail` bytes of history, then, when `follow`, new output as it
    /// comes. The answer is streamed to the client until the stream ends or
    /// the client goes away (the stream is then dropped).
    async fn console(&self, id: String, follow: bool, tail: u64) -> Result<ByteStream, CoreError>;

    /// Imports an uploaded image (`POST /api/v1/images/{name}/upload`) and
    /// answers with the import Job ([`Answer::Job`]). `body` yields the request body as it arrives,
    /// never buffered whole by the API layer; it yields an `Err` when the
    /// client breaks off or the upload exceeds the server's limit, and the
    /// core must then discard what it wrote.
    async fn upload_image(
        &self,
        upload: ImageUpload,
        body: ByteStream,
    ) -> Result<Answer, CoreError>;

    /// Installs a firmware bundle uploaded to `POST
    /// /api/v1/host/firmware/install` into this host's inactive slot and
    /// answers with the install Job ([`Answer::Job`]) once the body is
    /// received. `body` is as for [`Core::upload_image`]: an `Err` (the
    /// client broke off, or the upload exceeds the server's limit) means
    /// nothing is installed and what was received is removed. A core
    /// without firmware management answers [`CoreError::Conflict`].
    async fn install_firmware(&self, body: ByteStream) -> Result<Answer, CoreError> {
        drop(body);
        Err(CoreError::Conflict {
            reason: "firmware management is not enabled on this host".into(),
        })
    }

    /// Starts a rolling update of the cluster with the firmware bundle
    /// uploaded to `POST /api/v1/cluster/update` and answers with it
    /// ([`Answer::ClusterUpdate`]) once the body is received and checked on
    /// this host. `move_back`: VMs evacuated from a host move back once it
    /// is updated; `by` is the caller's user, recorded as who started it.
    /// `body` is as for [`Core::install_firmware`].
    async fn start_cluster_update(
        &self,
        by: String,
        move_back: bool,
        body: ByteStream,
    ) -> Result<Answer, CoreError> {
        let _ = (by, move_back);
        drop(body);
        Err(CoreError::Conflict {
            reason: "firmware management is not enabled on this host".into(),
        })
    }
}

/// A stream of bytes: a console's output, or an upload's body.
pub type ByteStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>,
>;
