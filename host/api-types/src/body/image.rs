//! Bodies of the image routes (`/api/v1/images...`).

use crate::body::FirmwareKind;
use crate::error::ApiError;
use crate::validate::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// A file on this host.
    Path(String),
    /// An http(s) URL.
    Url(String),
}

/// Body of `POST /api/v1/images`: `name`, exactly one of `path`, `url`,
/// and optional metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageAddBody {
    /// Image name.
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub name: String,
    /// Absolute path of a file on this host.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::ABS_PATH_PATTERN))]
    pub path: Option<String>,
    /// http(s) URL (plain http only with `sha256`).
    #[serde(default)]
    pub url: Option<String>,
    /// SHA-256 of the file (64 hex digits), checked before the image is
    /// added; required with a plain `http://` URL.
    #[serde(default)]
    pub sha256: Option<String>,
    /// OS family (name syntax), `linux` when absent.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::NAME_PATTERN))]
    pub os_family: Option<String>,
    /// OS variant (name syntax or empty), empty when absent.
    #[serde(default)]
    pub os_variant: Option<String>,
    /// Whether the image runs cloud-init (reads a NoCloud seed); true when absent.
    #[serde(default)]
    pub cloud_init: Option<bool>,
    /// Firmware the image boots with; BIOS when absent.
    #[serde(default)]
    pub firmware: Option<FirmwareKind>,
    /// Line the guest prints on its serial console when installed and up.
    #[serde(default)]
    pub ready_marker: Option<String>,
}

/// Metadata of a system image, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageMetaSpec {
    /// OS family, e.g. `linux` (default), `windows`.
    pub os_family: String,
    /// OS variant, e.g. `debian12`; may be empty.
    pub os_variant: String,
    /// The image runs cloud-init.
    pub cloud_init: bool,
    /// Firmware to boot it with.
    pub firmware: FirmwareKind,
    /// Serial console line that means "installed and up".
    pub ready_marker: Option<String>,
}

impl Default for ImageMetaSpec {
    fn default() -> Self {
        Self {
            os_family: "linux".into(),
            os_variant: String::new(),
            cloud_init: true,
            firmware: FirmwareKind::Bios,
            ready_marker: None,
        }
    }
}

impl ImageMetaSpec {
    /// Validates the optional metadata fields and applies the defaults.
    pub fn from_parts(
        os_family: Option<String>,
        os_variant: Option<String>,
        cloud_init: Option<bool>,
        firmware: Option<FirmwareKind>,
        ready_marker: Option<String>,
    ) -> Result<Self, ApiError> {
        let d = Self::default();
        if let Some(f) = &os_family {
            check_name("os_family", f)?;
        }
        if let Some(v) = &os_variant {
            if !v.is_empty() {
                check_name("os_variant", v)?;
            }
        }
        if let Some(m) = &ready_marker {
            check_ready_marker("ready_marker", m)?;
        }
        Ok(Self {
            os_family: os_family.unwrap_or(d.os_family),
            os_variant: os_variant.unwrap_or(d.os_variant),
            cloud_init: cloud_init.unwrap_or(d.cloud_init),
            firmware: firmware.unwrap_or(d.firmware),
            ready_marker,
        })
    }
}

/// A validated image import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageAdd {
    /// Image name.
    pub name: String,
    /// Source.
    pub source: ImageSource,
    /// The SHA-256 the file must have (64 lower-case hex digits).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Metadata.
    pub meta: ImageMetaSpec,
}

/// A validated image upload (`POST /api/v1/images/{name}/upload`); the
/// bytes come separately, as a [`ByteStream`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageUpload {
    /// Image name.
    pub name: String,
    /// Metadata (from the query string).
    pub meta: ImageMetaSpec,
}

impl ImageAddBody {
    /// Validates and turns the body into an [`ImageAdd`].
    pub fn into_add(self) -> Result<ImageAdd, ApiError> {
        check_name("name", &self.name)?;
        let source = match (self.path, self.url) {
            (Some(p), None) => {
                check_abs_path("path", &p)?;
                ImageSource::Path(p)
            }
            (None, Some(u)) => {
                let lower = u.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                    return Err(ApiError::field("url", "must be an http:// or https:// URL"));
                }
                if u.len() > 4096 || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ApiError::field(
                        "url",
                        "must be at most 4096 bytes without spaces",
                    ));
                }
                if !lower.starts_with("https://") && self.sha256.is_none() {
                    return Err(ApiError::field(
                        "sha256",
                        "required with a plain http:// URL (nothing else authenticates the \
                         download); give the image's SHA-256 or use https://",
                    ));
                }
                ImageSource::Url(u)
            }
            _ => return Err(ApiError::field("path", "give exactly one of path and url")),
        };
        let sha256 = match self.sha256 {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(ApiError::field(
                    "sha256",
                    "must be a SHA-256: 64 hex digits",
                ))
            }
            None => None,
        };
        let meta = ImageMetaSpec::from_parts(
            self.os_family,
            self.os_variant,
            self.cloud_init,
            self.firmware,
            self.ready_marker,
        )?;
        Ok(ImageAdd {
            name: self.name,
            source,
            sha256,
            meta,
        })
    }
}
