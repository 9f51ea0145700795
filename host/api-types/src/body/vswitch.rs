//! Body of `POST /api/v1/vswitches`.

use crate::error::ApiError;
use crate::validate::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/vswitches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VswitchCreate {
    /// Switch name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Host interface to bridge to, none for an internal switch.
    #[serde(default)]
    pub uplink: Option<String>,
    /// VLAN id, 1..=4094.
    #[serde(default)]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<u16>,
}

impl Validate for VswitchCreate {
    fn validate(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        if let Some(u) = &self.uplink {
            // Linux interface names: at most 15 bytes.
            check_name("uplink", u)?;
            if u.len() > 15 {
                return Err(ApiError::field(
                    "uplink",
                    "interface names are at most 15 bytes",
                ));
            }
        }
        if let Some(v) = self.vlan {
            if !(1..=4094).contains(&v) {
                return Err(ApiError::field(
                    "vlan",
                    format!("must be 1 to 4094, got {v}"),
                ));
            }
        }
        Ok(())
    }
}
