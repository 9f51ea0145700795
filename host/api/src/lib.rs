//! nasvisor's HTTPS admin endpoint (embedded by `nasvisord`).
//!
//! - [`tls`]: the TLS identity, configured or self-signed on first start;
//! - [`auth`]: the admin token, created on first start, stored as a hash;
//! - [`action`]: the one action type of the core ([`Action`]) and the typed,
//!   validated request bodies;
//! - [`router`]: method + path + body → [`Action`]; the route table that
//!   `openapi.json` (the source of truth) is checked against;
//! - [`server`]: hyper 1 over tokio-rustls, `/healthz` unauthenticated,
//!   everything else behind the token;
//! - [`schema`]: a checker of JSON values against `openapi.json`'s schemas
//!   (for tests of the real answers).
//!
//! The API layer never acts itself: it parses, validates and forwards to
//! [`Core::handle`] (or, for the two streamed routes, [`Core::console`] and
//! [`Core::upload_image`]).

pub mod action;
pub mod auth;
pub mod error;
mod fsutil;
pub mod router;
pub mod schema;
pub mod server;
pub mod tls;

pub use action::{Action, ByteStream, Core, FirmwareKind, ImageMetaSpec, ImageUpload, PowerOp};
pub use error::{ApiError, CoreError};
pub use nasvisor_limits::ServerLimits;
pub use server::{Server, ServerSettings};

/// The OpenAPI document of this API (the source of truth for routes,
/// schemas and the error format).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
