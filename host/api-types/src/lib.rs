//! # nasvisor API types
//!
//! The contract between the HTTPS server (`nasvisor-api`), the core
//! (`nasvisor-core`) and the CLI (`nasvisor-cli`), with no HTTP, TLS or
//! async runtime in it:
//!
//! - [`action`]: [`Action`], the one action type of the core;
//! - [`body`]: the typed request bodies, one file per resource, and their
//!   validation ([`Validate`], [`validate`]);
//! - [`view`]: the typed answers (VM, host, job, pool, volume, image,
//!   vswitch, event, plugin, cluster); the core builds them, the server
//!   sends them, the CLI reads them;
//! - [`error`]: [`ApiError`] (what the API answers) and [`CoreError`];
//! - [`handler`]: the [`Core`] trait the server forwards actions to;
//! - [`peer`]: the typed, versioned protocol between hosts;
//! - [`routes`]: the route table (method, path, operation, query);
//! - [`openapi`]: `openapi.json`, generated from the route table and the
//!   schemas derived from the types.

pub mod action;
pub mod body;
pub mod cert;
pub mod error;
pub mod handler;
pub mod openapi;
pub mod peer;
pub mod routes;
pub mod validate;
pub mod view;

pub use action::*;
pub use body::*;
pub use cert::fingerprint;
pub use error::{ApiError, CoreError, ErrorDetail, ErrorView};
pub use handler::{AuditEntry, ByteStream, Caller, Core, Credential, Request};
pub use validate::*;
pub use view::*;
