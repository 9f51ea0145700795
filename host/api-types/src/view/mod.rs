//! The typed answers of the API, one file per resource. The core builds
//! them, the server sends them as JSON, the CLI reads them back. Their
//! schemas (derived) are the components of `openapi.json`.
//!
//! Views accept fields they do not know when read (a newer server may add
//! some); [`strict`] is the check tests use for "exactly this shape".

mod answer;
mod auth;
mod cluster;
mod event;
mod firmware;
mod host;
mod image;
mod job;
mod plugin;
mod reboot;
mod rollout;
mod settings;
mod storage;
mod vm;
mod vswitch;

pub use answer::{Answer, IntoAnswer};
pub use auth::*;
pub use cluster::*;
pub use event::*;
pub use firmware::*;
pub use host::*;
pub use image::*;
pub use job::*;
pub use plugin::*;
pub use reboot::*;
pub use rollout::*;
pub use settings::*;
pub use storage::*;
pub use vm::*;
pub use vswitch::*;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Health", deny_unknown_fields)]
pub struct HealthView {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// The one status of the health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The server answers.
    Ok,
}

/// Reads `value` as a `T` and checks that it is exactly a `T`: no field
/// the view does not know, none missing (an absent optional field would
/// come back as `null`), every type and enum value right. It is what tests
/// of the real answers use; the CLI reads answers leniently.
pub fn strict<T: DeserializeOwned + Serialize>(value: &serde_json::Value) -> Result<T, String> {
    let view: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&view).map_err(|e| e.to_string())?;
    if &back != value {
        return Err(format!(
            "not exactly a {}: read back as {back} from {value}",
            std::any::type_name::<T>()
        ));
    }
    Ok(view)
}
