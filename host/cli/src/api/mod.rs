//! The commands that talk to nasvisord's HTTPS admin API.
//!
//! - [`client`]: ureq + rustls, CA-file or fingerprint trust, bearer token,
//!   API errors as `field: reason (HTTP status)`;
//! - [`commands`]: argument parsing into request bodies that match
//!   `host/api/openapi.json`, and the output (tables, or `--json`);
//! - [`console`]: the streamed console and image upload;
//! - [`table`]: aligned tables.

pub mod client;
pub mod commands;
pub mod console;
pub mod table;
