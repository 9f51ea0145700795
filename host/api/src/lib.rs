//! nasvisor's HTTPS admin endpoint (embedded by `nasvisord`): the server
//! only. The contract it serves (the [`Action`] type, request bodies and
//! their validation, answer views, errors, the route table and
//! `openapi.json`) lives in `nasvisor-api-types`, re-exported here.
//!
//! - [`tls`]: the TLS identity, configured or self-signed on first start;
//! - [`auth`]: credentials as HTTP carries them (bearer header, session
//!   cookie, CSRF header); the core says who they belong to;
//! - [`router`]: method + path + body → [`Action`], by the route table
//!   [`nasvisor_api_types::routes::ROUTES`];
//! - [`server`]: hyper 1 over tokio-rustls, `/healthz`, the login and the
//!   web console's static files unauthenticated, everything else behind a
//!   credential and the route's role, every change written to the audit
//!   log;
//! - [`console_ui`]: the web console (`host/api/web/`: HTML, CSS and
//!   JavaScript, no build step), embedded and served at `/` with a strict
//!   Content-Security-Policy; it reads and acts through `/api/v1` with the
//!   session cookie.
//!
//! The API layer never acts itself: it parses, validates and forwards to
//! [`Core::handle`] (or, for the two streamed routes, [`Core::console`] and
//! [`Core::upload_image`]).

pub mod auth;
pub mod console_ui;
pub mod router;
pub mod server;
pub mod tls;

/// The contract types (re-exported from `nasvisor-api-types`).
pub use nasvisor_api_types as types;
pub use nasvisor_api_types::{
    action, error, Action, Answer, ApiError, ByteStream, Core, CoreError, FirmwareKind,
    ImageMetaSpec, ImageUpload, PowerOp,
};
pub use nasvisor_limits::ServerLimits;
pub use server::{Server, ServerSettings};

/// The OpenAPI document of this API, generated from the route table and
/// the types (`nasvisor_api_types::openapi`).
pub const OPENAPI_JSON: &str = nasvisor_api_types::openapi::OPENAPI_JSON;
