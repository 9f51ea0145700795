//! Bodies of the plugin routes (`/api/v1/plugins...`).

use crate::error::ApiError;
use crate::validate::Validate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest plugin package, bytes.
pub const MAX_PLUGIN_PACKAGE: usize = 768 * 1024;

/// Body of `POST /api/v1/plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginInstall {
    /// The signed `.nvplugin` package, base64 (standard alphabet).
    pub package: String,
}

impl PluginInstall {
    /// The package's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, ApiError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(self.package.trim())
            .map_err(|e| ApiError::field("package", format!("not base64: {e}")))
    }
}

impl Validate for PluginInstall {
    fn validate(&self) -> Result<(), ApiError> {
        let b = self.bytes()?;
        if b.is_empty() || b.len() > MAX_PLUGIN_PACKAGE {
            return Err(ApiError::field(
                "package",
                format!(
                    "{} bytes; a package is 1 to {MAX_PLUGIN_PACKAGE} bytes",
                    b.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The plugin worlds, as the API names them.
pub const PLUGIN_WORLDS: [&str; 4] = ["scheduler", "ha-policy", "sha", "os-installer"];
