//! The OS installer's settings, read through [`Env`].
//!
//! | key | type | default | meaning |
//! |-----|------|---------|---------|
//! | `disk-method` | `clone-backing` or `full-convert` | `clone-backing` | How a disk image becomes the VM's disk: a qcow2 overlay backed by the image, or a full independent copy. |
//! | `ready-marker` | printable ASCII, 1-200 chars | `NASVISOR-READY` | The serial-console line that says the first boot finished, when the image names none. |
//! | `install-timeout-ms` | u64, 1000..=86400000 | 600000 | How long the host waits for the install to complete (1 s to 24 h, the range the host accepts). |
//!
//! A value that does not parse is a `bad-settings` error naming the key.

use nasvisor_plugin_sdk::prelude::*;

use crate::validate;

/// Setting key: disk creation method.
pub const DISK_METHOD: &str = "disk-method";
/// Setting key: default ready marker.
pub const READY_MARKER: &str = "ready-marker";
/// Setting key: install timeout.
pub const INSTALL_TIMEOUT_MS: &str = "install-timeout-ms";
/// Default of [`READY_MARKER`].
pub const DEFAULT_READY_MARKER: &str = "NASVISOR-READY";
/// Accepted range of [`INSTALL_TIMEOUT_MS`].
pub const INSTALL_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;
/// Default of [`INSTALL_TIMEOUT_MS`].
pub const DEFAULT_INSTALL_TIMEOUT_MS: u64 = 600_000;

/// All settings of the OS installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// See [`DISK_METHOD`].
    pub disk_method: DiskMethod,
    /// See [`READY_MARKER`].
    pub ready_marker: String,
    /// See [`INSTALL_TIMEOUT_MS`].
    pub install_timeout_ms: u64,
}

fn bad(key: &str, msg: String) -> PluginError {
    PluginError::new(ErrorCode::BadSettings, format!("setting {key:?}: {msg}"))
}

impl Settings {
    /// Read and check every setting.
    pub fn load(env: &dyn Env) -> Result<Self, PluginError> {
        let disk_method = match env.setting(DISK_METHOD) {
            None => DiskMethod::CloneBacking,
            Some(v) => match v.trim() {
                "clone-backing" => DiskMethod::CloneBacking,
                "full-convert" => DiskMethod::FullConvert,
                _ => {
                    return Err(bad(
                        DISK_METHOD,
                        format!(
                            "unknown value {v:?} (expected \"clone-backing\" or \"full-convert\")"
                        ),
                    ))
                }
            },
        };
        let ready_marker = env
            .setting(READY_MARKER)
            .unwrap_or_else(|| DEFAULT_READY_MARKER.into());
        validate::marker(&ready_marker).map_err(|m| bad(READY_MARKER, m))?;
        let install_timeout_ms = env.setting_or(INSTALL_TIMEOUT_MS, DEFAULT_INSTALL_TIMEOUT_MS)?;
        if !INSTALL_TIMEOUT_RANGE_MS.contains(&install_timeout_ms) {
            return Err(bad(
                INSTALL_TIMEOUT_MS,
                format!("{install_timeout_ms} is outside 1000..=86400000"),
            ));
        }
        Ok(Settings {
            disk_method,
            ready_marker,
            install_timeout_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_with;

    #[test]
    fn defaults() {
        let s = Settings::load(&env_with(&[])).unwrap();
        assert_eq!(s.disk_method, DiskMethod::CloneBacking);
        assert_eq!(s.ready_marker, "NASVISOR-READY");
        assert_eq!(s.install_timeout_ms, 600_000);
    }

    #[test]
    fn values() {
        let s = Settings::load(&env_with(&[
            ("disk-method", "full-convert"),
            ("ready-marker", "BOOTED OK"),
            ("install-timeout-ms", "1000"),
        ]))
        .unwrap();
        assert_eq!(s.disk_method, DiskMethod::FullConvert);
        assert_eq!(s.ready_marker, "BOOTED OK");
        assert_eq!(s.install_timeout_ms, 1000);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (k, v) in [
            ("disk-method", "copy"),
            ("ready-marker", ""),
            ("ready-marker", "a\nb"),
            ("install-timeout-ms", "0"),
            ("install-timeout-ms", "999"),
            ("install-timeout-ms", "86400001"),
            ("install-timeout-ms", "soon"),
        ] {
            let e = Settings::load(&env_with(&[(k, v)])).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadSettings);
            assert!(e.message.contains(k), "{}", e.message);
        }
    }
}
