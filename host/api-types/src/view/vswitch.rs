//! The vswitch answer (`Vswitch` schema).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A virtual switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Vswitch", deny_unknown_fields)]
pub struct VswitchView {
    /// Switch name.
    pub name: String,
    /// Host interface it bridges to.
    pub uplink: Option<String>,
    /// VLAN id.
    pub vlan: Option<u16>,
}
