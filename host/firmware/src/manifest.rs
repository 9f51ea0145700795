//! The manifest: what a bundle says about itself, signed by the vendor.
//!
//! ```json
//! {
//!   "format": 1,
//!   "product": "acme-nas",
//!   "compatible": ["acme-nas4", "acme-nas8"],
//!   "version": "2.1.0",
//!   "min-version": "2.0.0",
//!   "class": "reboot",
//!   "created": "2026-01-10T09:00:00Z",
//!   "expires": "2026-07-09T09:00:00Z",
//!   "payload": { "name": "rootfs.erofs", "size": 41943040, "sha256": "9f86…" },
//!   "signer": "0123456789abcdef"
//! }
//! ```
//!
//! Unknown fields are refused: a field this build does not know could
//! change what the bundle means. A later format raises `format`.

use crate::error::BundleError;
use semver::Version;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The largest manifest read, before its signature is checked.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// The longest payload member name: what a ustar header's name field holds.
const MAX_PAYLOAD_NAME: usize = 100;

/// The longest product or board name.
const MAX_NAME: usize = 64;

/// The member names the bundle layout reserves.
pub(crate) const MANIFEST_MEMBER: &str = "manifest.json";
pub(crate) const SIGNATURE_MEMBER: &str = "manifest.sig";

/// What an update replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// A new root slot image: installed into the inactive slot, booted at
    /// the next reboot.
    Reboot,
    /// A new nasvisord and plugins (a tar of them): swapped in without a
    /// reboot; the VMs keep running.
    Service,
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::Reboot => "reboot",
            Class::Service => "service",
        })
    }
}

impl std::str::FromStr for Class {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reboot" => Ok(Class::Reboot),
            "service" => Ok(Class::Service),
            other => Err(format!("{other:?} is not a class (reboot or service)")),
        }
    }
}

/// The payload member: its name in the tar, and the size and digest the
/// signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Payload {
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the payload bytes.
    pub sha256: String,
}

/// A bundle's manifest. See the module documentation for its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format ([`FORMAT`]).
    pub format: u32,
    /// The product the bundle is for; an appliance refuses another's.
    pub product: String,
    /// The boards it runs on; an appliance refuses a bundle that does not
    /// name its board.
    pub compatible: Vec<String>,
    /// The version the bundle installs.
    pub version: Version,
    /// The rollback floor this release sets: once it is installed, no
    /// bundle older than this may be (anti-downgrade). At most `version`.
    pub min_version: Version,
    /// What the update replaces.
    pub class: Class,
    /// When the bundle was built.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// After this the bundle is refused: an attacker who withholds newer
    /// releases cannot keep an old one installable for ever (TUF's freeze
    /// attack).
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The payload member.
    pub payload: Payload,
    /// The key id of the signer (`nasvisor-signing::key_id`); `None` in an
    /// unsigned bundle.
    pub signer: Option<String>,
}

/// Only the format, read before the rest so that a later format is named as
/// such rather than refused for its new fields.
#[derive(Deserialize)]
struct FormatOnly {
    format: serde_json::Value,
}

/// Only the signer, read from an unverified manifest to name the key in a
/// refusal.
#[derive(Deserialize)]
struct SignerOnly {
    signer: Option<String>,
}

impl Manifest {
    /// Reads a manifest: its format first, then every field strictly, then
    /// the rules between fields ([`Manifest::validate`]).
    pub fn from_slice(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let format: FormatOnly = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::invalid("manifest", e.to_string()))?;
        if format.format.as_u64() != Some(u64::from(FORMAT)) {
            return Err(BundleError::UnsupportedFormat {
                found: format.format.to_string(),
                supported: FORMAT,
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "manifest".to_string()
            } else {
                format!("manifest.{path}")
            };
            BundleError::invalid(field, e.into_inner().to_string())
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The exact bytes written into the bundle (and signed): pretty JSON,
    /// with a final newline, so that `tar -xO` shows it readably.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// The signer an unverified manifest names, for a refusal's message.
    pub(crate) fn claimed_signer(bytes: &[u8]) -> Option<String> {
        serde_json::from_slice::<SignerOnly>(bytes)
            .ok()
            .and_then(|s| s.signer)
    }

    /// The rules between fields and the shape of each name.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.format != FORMAT {
            return Err(BundleError::UnsupportedFormat {
                found: self.format.to_string(),
                supported: FORMAT,
            });
        }
        check_name("manifest.product", &self.product, MAX_NAME)?;
        if self.compatible.is_empty() {
            return Err(BundleError::invalid(
                "manifest.compatible",
                "names no board: a bundle must name the boards it runs on",
            ));
        }
        for (i, board) in self.compatible.iter().enumerate() {
            let field = format!("manifest.compatible[{i}]");
            check_name(&field, board, MAX_NAME)?;
            if self.compatible[..i].contains(board) {
                return Err(BundleError::invalid(
                    field,
                    format!("{board:?} is named twice"),
                ));
            }
        }
        if self.min_version > self.version {
            return Err(BundleError::invalid(
                "manifest.min-version",
                format!(
                    "{} is above the bundle's own version {}",
                    self.min_version, self.version
                ),
            ));
        }
        if self.expires <= self.created {
            return Err(BundleError::invalid(
                "manifest.expires",
                format!(
                    "{} is not after the creation time {}",
                    rfc3339(self.expires),
                    rfc3339(self.created)
                ),
            ));
        }
        check_name(
            "manifest.payload.name",
            &self.payload.name,
            MAX_PAYLOAD_NAME,
        )?;
        if [MANIFEST_MEMBER, SIGNATURE_MEMBER].contains(&self.payload.name.as_str()) {
            return Err(BundleError::invalid(
                "manifest.payload.name",
                format!("{:?} is the name of a bundle member", self.payload.name),
            ));
        }
        if !is_lower_hex(&self.payload.sha256, 64) {
            return Err(BundleError::invalid(
                "manifest.payload.sha256",
                "not 64 lower-case hex digits",
            ));
        }
        if let Some(signer) = &self.signer {
            if !is_lower_hex(signer, 16) {
                return Err(BundleError::invalid(
                    "manifest.signer",
                    "not a key id (16 lower-case hex digits)",
                ));
            }
        }
        Ok(())
    }
}

/// A timestamp as RFC 3339 (what the manifest holds), in whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A product, board or payload name: 1 to `max` characters of ASCII
/// letters, digits, `.`, `_` and `-`, not starting with `.` or `-`. Such a
/// name is a safe file name and a safe tar member name.
pub(crate) fn check_name(field: &str, name: &str, max: usize) -> Result<(), BundleError> {
    let reason = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > max {
        format!("is {} characters long, more than {max}", name.len())
    } else if name.starts_with(['.', '-']) {
        format!("{name:?} starts with {:?}", &name[..1])
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        format!("{name:?} holds {c:?}: only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        return Ok(());
    };
    Err(BundleError::invalid(field, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            product: "acme-nas".into(),
            compatible: vec!["acme-nas4".into()],
            version: Version::new(2, 1, 0),
            min_version: Version::new(2, 0, 0),
            class: Class::Reboot,
            created: datetime!(2026-01-10 09:00 UTC),
            expires: datetime!(2026-07-09 09:00 UTC),
            payload: Payload {
                name: "rootfs.erofs".into(),
                size: 3,
                sha256: "ab".repeat(32),
            },
            signer: None,
        }
    }

    fn field_of(e: BundleError) -> String {
        match e {
            BundleError::InvalidField { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    #[test]
    fn a_manifest_round_trips_through_its_bytes() {
        let m = sample();
        let bytes = m.to_bytes();
        assert!(bytes.ends_with(b"}\n"));
        assert_eq!(Manifest::from_slice(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"min-version\": \"2.0.0\""), "{text}");
        assert!(
            text.contains("\"created\": \"2026-01-10T09:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_format_is_named_before_any_other_field_is_read() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format"] = 2.into();
        v["new-field"] = "x".into();
        let e = Manifest::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(&e, BundleError::UnsupportedFormat { found, supported: 1 } if found == "2"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_badly_typed_fields_are_refused_by_their_path() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["payload"]["extra"] = 1.into();
        let e = Manifest::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(field_of(e), "manifest.payload.extra");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = "two".into();
        let e = Manifest::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(field_of(e), "manifest.version");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["expires"] = "next year".into();
        let e = Manifest::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(field_of(e), "manifest.expires");
    }

    #[test]
    fn the_rules_between_fields_name_the_field() {
        type Change = fn(&mut Manifest);
        let cases: Vec<(Change, &str)> = vec![
            (|m| m.product = "acme nas".into(), "manifest.product"),
            (|m| m.product = String::new(), "manifest.product"),
            (|m| m.compatible.clear(), "manifest.compatible"),
            (
                |m| m.compatible.push("acme-nas4".into()),
                "manifest.compatible[1]",
            ),
            (
                |m| m.compatible[0] = "../x".into(),
                "manifest.compatible[0]",
            ),
            (
                |m| m.min_version = Version::new(3, 0, 0),
                "manifest.min-version",
            ),
            (|m| m.expires = m.created, "manifest.expires"),
            (|m| m.payload.name = "a/b".into(), "manifest.payload.name"),
            (
                |m| m.payload.name = "manifest.sig".into(),
                "manifest.payload.name",
            ),
            (
                |m| m.payload.name = "x".repeat(101),
                "manifest.payload.name",
            ),
            (
                |m| m.payload.sha256 = "AB".repeat(32),
                "manifest.payload.sha256",
            ),
            (|m| m.signer = Some("nobody".into()), "manifest.signer"),
        ];
        for (change, field) in cases {
            let mut m = sample();
            change(&mut m);
            assert_eq!(field_of(m.validate().unwrap_err()), field);
        }
        assert!(sample().validate().is_ok());
    }

    #[test]
    fn timestamps_with_an_offset_are_read() {
        let text = String::from_utf8(sample().to_bytes())
            .unwrap()
            .replace("2026-01-10T09:00:00Z", "2026-01-10T11:00:00+02:00");
        let m = Manifest::from_slice(text.as_bytes()).unwrap();
        assert_eq!(m.created, sample().created);
    }
}
