//! The access answers: sessions, the caller, users, API tokens, the audit
//! log.

use crate::body::Role;
use crate::validate::REDACTED;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An API token (`Authorization: Bearer nvt_...`).
    Token,
    /// A login session (the web console's cookie, or its bearer form).
    Session,
}

/// `POST /api/v1/auth/login`: a new session. The web console keeps it in
/// an HttpOnly cookie; a script may send `token` as a bearer token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Session", deny_unknown_fields)]
pub struct SessionView {
    /// The session's secret, shown once.
    pub token: String,
    /// Who logged in.
    pub user: String,
    /// The user's role.
    pub role: Role,
    /// When the session ends at the latest (RFC 3339); it ends sooner after
    /// `idle_timeout_s` without a request.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
    /// Seconds without a request after which the session ends.
    pub idle_timeout_s: u64,
    /// What a request authenticated by the session cookie must send in the
    /// `X-CSRF-Token` header to change anything.
    pub csrf_token: String,
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("token", &REDACTED)
            .field("user", &self.user)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("csrf_token", &REDACTED)
            .finish()
    }
}

/// `GET /api/v1/auth/whoami`: the caller as the server sees it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Caller", deny_unknown_fields)]
pub struct CallerView {
    /// User name.
    pub user: String,
    /// The role the request acts with: the lower of the user's and the
    /// token's.
    pub role: Role,
    /// How it authenticated.
    pub via: CredentialKind,
    /// The token's id (`token list`), or a session's short id.
    pub credential: String,
    /// When the credential expires (RFC 3339), null when never.
    pub expires_at: Option<String>,
    /// For a session: what a request authenticated by its cookie must send
    /// in the `X-CSRF-Token` header to change anything (the web console
    /// reads it again after a page reload); null for an API token.
    #[serde(default)]
    pub csrf_token: Option<String>,
}

// Requests are logged: the CSRF token is not shown.
impl std::fmt::Debug for CallerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerView")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("via", &self.via)
            .field("credential", &self.credential)
            .field("expires_at", &self.expires_at)
            .field("csrf_token", &self.csrf_token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// A user (`GET /api/v1/users`). Its password hash is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "User", deny_unknown_fields)]
pub struct UserView {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Disabled users cannot log in; their tokens are refused.
    pub disabled: bool,
    /// Whether a password is set (the bootstrap admin has none until one is
    /// given: it logs in with its token only).
    pub password_set: bool,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// When the password was last set (RFC 3339), null when never.
    pub password_changed_at: Option<String>,
}

/// An API token (`GET /api/v1/tokens`); its secret is never shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "ApiToken", deny_unknown_fields)]
pub struct ApiTokenView {
    /// Its id (what `token revoke` takes): 16 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The user it acts as.
    pub user: String,
    /// Its role (it never acts beyond its user's present role).
    pub role: Role,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it expires (RFC 3339), null when never.
    pub expires_at: Option<String>,
    /// Whether it has expired (an expired token is refused; revoke it to
    /// remove it from the list).
    pub expired: bool,
}

/// `POST /api/v1/tokens`: the new token and its secret, shown once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "NewApiToken", deny_unknown_fields)]
pub struct NewTokenView {
    /// The secret to send as `Authorization: Bearer <token>`. Only its hash
    /// is stored: it cannot be shown again.
    pub token: String,
    /// The token.
    pub details: ApiTokenView,
}

impl std::fmt::Debug for NewTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTokenView")
            .field("token", &REDACTED)
            .field("details", &self.details)
            .finish()
    }
}

/// One entry of the audit log (`GET /api/v1/audit`): a change asked of the
/// API, who asked, from where, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "AuditEntry", deny_unknown_fields)]
pub struct AuditView {
    /// Sequence number, increasing.
    #[schemars(range(min = 1))]
    pub seq: u64,
    /// When the request was answered (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The user (for a failed login, the name given).
    pub user: String,
    /// The role the request acted with; null for a login.
    pub role: Option<Role>,
    /// The token's id or the session's short id; null for a login.
    pub credential: Option<String>,
    /// The client's address.
    pub address: String,
    /// The host that served the request.
    pub host: String,
    /// The operation (`operationId` in openapi.json), e.g. `vmPower`.
    pub operation: String,
    /// HTTP method and path, e.g. `POST /api/v1/vms/web1/power`.
    pub request: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok`, or why the request failed.
    pub result: String,
}

/// The admin endpoint's certificate (`GET|PUT /api/v1/host/certificate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Certificate", deny_unknown_fields)]
pub struct CertificateView {
    /// SHA-256 of the certificate (`AA:BB:...`), what `--fingerprint` pins.
    pub fingerprint: String,
    /// Its subject.
    pub subject: String,
    /// Its issuer (the subject again when self-signed).
    pub issuer: String,
    /// Whether it signed itself (nasvisord's generated one does).
    pub self_signed: bool,
    /// Valid from (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_before: String,
    /// Valid until (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
    /// The DNS names and addresses it is valid for.
    pub names: Vec<String>,
    /// Certificates in the chain served (the server's own and intermediates).
    pub chain_length: u32,
}
