//! Errors of the API layer and of the core, and their JSON form.
//!
//! Every error body has the shape `{"error": {"field": <string|null>, "reason": <string>}}`
//! ([`ErrorView`], schema `Error` in `openapi.json`).

use http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An error the API layer answers with. `field` names the offending request
/// field (dotted path, e.g. `disks[0].size_mib`), or is `None` when the error
/// is not about one field (unknown route, missing token, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}{reason}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// The request field at fault, if any.
    pub field: Option<String>,
    /// Why the request was refused.
    pub reason: String,
}

impl ApiError {
    /// A 400 about one field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    /// An error not about one field.
    pub fn status(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            field: None,
            reason: reason.into(),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorView {
        ErrorView {
            error: ErrorDetail {
                field: self.field.clone(),
                reason: self.reason.clone(),
            },
        }
    }
}

/// The body of every error answer (`Error` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Error", deny_unknown_fields)]
pub struct ErrorView {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The detail of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// The request field at fault (dotted path), null when not about one field.
    pub field: Option<String>,
    /// Why the request was refused.
    pub reason: String,
}

/// An error from the core. The API layer maps it to a status code. It
/// travels between hosts as JSON when an action is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreError {
    /// The named object does not exist (404).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `vm vm1`.
        what: String,
    },
    /// The request conflicts with the current state (409).
    #[error("conflict: {reason}")]
    Conflict {
        /// Why.
        reason: String,
    },
    /// A field is syntactically fine but invalid against the current state (422).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The request field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// The core cannot serve now, e.g. no cluster quorum (503).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A host cannot serve the peer protocol version a request was written
    /// in (503: during a rolling update, until the members are within one
    /// version of each other; see `docs/cluster.md`).
    #[error(
        "host {host} cannot serve peer protocol version {theirs}: it serves versions \
         {oldest}..={ours}; members must be within one version of each other (finish the \
         update of the cluster)"
    )]
    UnsupportedVersion {
        /// The host that refused.
        host: String,
        /// The version it speaks.
        ours: u32,
        /// The oldest version it serves.
        oldest: u32,
        /// The version of the request.
        theirs: u32,
    },
    /// The credential is missing, wrong, expired or revoked (401).
    #[error("{reason}")]
    Unauthenticated {
        /// Why.
        reason: String,
    },
    /// The caller may not do this (403).
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why.
        reason: String,
    },
    /// Too many failed logins (429).
    #[error("{reason}")]
    Throttled {
        /// Why, and for how long.
        reason: String,
        /// Seconds until the next attempt is taken.
        retry_after_s: u64,
    },
    /// A bug or an unexpected failure (500).
    #[error("internal error: {reason}")]
    Internal {
        /// What went wrong.
        reason: String,
    },
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound { .. } => ApiError::status(StatusCode::NOT_FOUND, e.to_string()),
            CoreError::Conflict { reason } => ApiError::status(StatusCode::CONFLICT, reason),
            CoreError::Invalid { field, reason } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                field: Some(field),
                reason,
            },
            CoreError::Unavailable { reason } => {
                ApiError::status(StatusCode::SERVICE_UNAVAILABLE, reason)
            }
            CoreError::UnsupportedVersion { .. } => {
                ApiError::status(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            CoreError::Unauthenticated { reason } => ApiError {
                status: StatusCode::UNAUTHORIZED,
                field: Some("authorization".into()),
                reason,
            },
            CoreError::Forbidden { reason } => ApiError::status(StatusCode::FORBIDDEN, reason),
            CoreError::Throttled { reason, .. } => {
                ApiError::status(StatusCode::TOO_MANY_REQUESTS, reason)
            }
            CoreError::Internal { reason } => {
                ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, reason)
            }
        }
    }
}
