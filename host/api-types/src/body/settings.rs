//! The body of `PUT /api/v1/host/settings`: a host's site settings file.

use crate::error::ApiError;
use crate::validate::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest site settings file, bytes.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// Body of `PUT /api/v1/host/settings`: the whole site settings file, TOML
/// in the daemon's configuration format (docs/appliance.md, "Site
/// settings"). It replaces the file once the daemon checked it as its next
/// start would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSettingsReplace {
    /// The file's text (TOML).
    #[schemars(length(max = 65536))]
    pub text: String,
}

impl Validate for HostSettingsReplace {
    fn validate(&self) -> Result<(), ApiError> {
        if self.text.len() > MAX_SETTINGS_BYTES {
            return Err(ApiError::field(
                "text",
                format!("must be at most {MAX_SETTINGS_BYTES} bytes"),
            ));
        }
        if self.text.contains('\0') {
            return Err(ApiError::field("text", "must not contain NUL characters"));
        }
        Ok(())
    }
}
