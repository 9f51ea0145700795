//! The image answer (`Image` schema).

use crate::body::FirmwareKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// State of an image of the library (also the state the core records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    /// Being imported.
    Importing,
    /// Usable.
    Ready,
    /// The import failed (see `error`).
    Failed,
}

/// Format of an image's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// qcow2.
    Qcow2,
    /// Raw.
    Raw,
    /// Single-file VMDK.
    Vmdk,
    /// VirtualBox VDI.
    Vdi,
    /// An installer ISO.
    Iso,
}

/// A system image of the library (`GET /api/v1/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Image", deny_unknown_fields)]
pub struct ImageView {
    /// Image name.
    pub name: String,
    /// Size of its file, MiB.
    pub size_mib: u64,
    /// State.
    pub state: ImageState,
    /// Format of the source as imported.
    pub format: ImageFormat,
    /// Virtual size, MiB.
    pub virtual_size_mib: u64,
    /// OS family.
    pub os_family: String,
    /// OS variant.
    pub os_variant: String,
    /// Runs cloud-init.
    pub cloud_init: bool,
    /// Firmware it boots with.
    pub firmware: FirmwareKind,
    /// Serial console line that means "installed and up".
    pub ready_marker: Option<String>,
    /// An installer ISO (attached as a CD-ROM) rather than a disk image.
    pub iso: bool,
    /// The import job while importing.
    pub job: Option<String>,
    /// Why the import failed.
    pub error: Option<String>,
    /// Hosts that hold a copy of the image.
    pub hosts: Vec<String>,
}
