//! Bodies of the access routes: login, users, API tokens.

use crate::error::ApiError;
use crate::validate::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Shortest password accepted, characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, bytes (argon2's cost grows with it).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest life of an API token, seconds (about ten years).
pub const MAX_TOKEN_TTL_S: u64 = 10 * 366 * 24 * 3600;

/// What a user may do; each role may do everything the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only: lists and details, never a console.
    Viewer,
    /// A viewer who may also power VMs, use their consoles, migrate them
    /// and cancel jobs.
    Operator,
    /// Everything, including users, tokens, plugins, the cluster and the
    /// audit log.
    Admin,
}

impl Role {
    /// The API name (`viewer`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a new password: 8 characters or more, at most 1 KiB.
pub fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::field(
            field,
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::field(
            field,
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// User name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &REDACTED)
            .finish()
    }
}

impl Validate for Login {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("user", &self.user)?;
        if self.password.is_empty() || self.password.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::field(
                "password",
                format!("must be 1 to {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

/// Body of `POST /api/v1/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    /// User name (also the login).
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Password, 8 characters or more.
    #[schemars(length(min = MIN_PASSWORD_CHARS))]
    pub password: String,
    /// Role.
    pub role: Role,
}

impl std::fmt::Debug for UserCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreate")
            .field("name", &self.name)
            .field("password", &REDACTED)
            .field("role", &self.role)
            .finish()
    }
}

impl Validate for UserCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        check_password("password", &self.password)
    }
}

/// Body of `PATCH /api/v1/users/{name}`: the fields to change. A new
/// password, a new role or disabling the user ends the user's sessions.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// New role.
    #[serde(default)]
    pub role: Option<Role>,
    /// New password.
    #[serde(default)]
    #[schemars(length(min = MIN_PASSWORD_CHARS))]
    pub password: Option<String>,
    /// Disable (true) or enable (false) the user: a disabled user cannot log
    /// in, and neither its sessions nor its tokens are accepted.
    #[serde(default)]
    pub disabled: Option<bool>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl Validate for UserUpdate {
    fn validate(&self) -> Result<(), ApiError> {
        if self.role.is_none() && self.password.is_none() && self.disabled.is_none() {
            return Err(ApiError::field(
                "body",
                "give at least one of role, password, disabled",
            ));
        }
        if let Some(p) = &self.password {
            check_password("password", p)?;
        }
        Ok(())
    }
}

/// Body of `POST /api/v1/auth/password`: the caller changes its own
/// password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The present password.
    pub current: String,
    /// The new password, 8 characters or more.
    #[schemars(length(min = MIN_PASSWORD_CHARS))]
    pub new: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange").finish_non_exhaustive()
    }
}

impl Validate for PasswordChange {
    fn validate(&self) -> Result<(), ApiError> {
        if self.current.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::field(
                "current",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        check_password("new", &self.new)
    }
}

/// Body of `POST /api/v1/tokens`: a new API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A name to tell it by (e.g. `backup-script`).
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Its role: at most the user's (the default). A token never acts
    /// beyond its user's present role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Lifetime in seconds; none for a token that does not expire.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TOKEN_TTL_S))]
    pub expires_in_s: Option<u64>,
    /// The user it acts as: the caller when absent; another user's only
    /// for an admin.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub user: Option<String>,
}

impl Validate for TokenCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        if let Some(s) = self.expires_in_s {
            if s == 0 || s > MAX_TOKEN_TTL_S {
                return Err(ApiError::field(
                    "expires_in_s",
                    format!("must be 1 to {MAX_TOKEN_TTL_S} seconds"),
                ));
            }
        }
        if let Some(u) = &self.user {
            check_name("user", u)?;
        }
        Ok(())
    }
}

/// Body of `PUT /api/v1/host/certificate`: the admin endpoint's new
/// certificate (chain, end-entity first) and its private key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateReplace {
    /// The certificate chain, PEM, the server's own first.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for CertificateReplace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateReplace")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &REDACTED)
            .finish()
    }
}

impl Validate for CertificateReplace {
    fn validate(&self) -> Result<(), ApiError> {
        for (field, pem, what) in [
            ("cert_pem", &self.cert_pem, "CERTIFICATE"),
            ("key_pem", &self.key_pem, "PRIVATE KEY"),
        ] {
            if !pem.contains("-----BEGIN ") || !pem.contains(what) {
                return Err(ApiError::field(
                    field,
                    format!("must be PEM with a {what} block"),
                ));
            }
        }
        Ok(())
    }
}
