//! nasvisord's configuration: a TOML file whose every setting has an
//! embedded default, so the daemon starts with no file at all.

use nasvisor_plugin_host::RuntimeConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the configuration is unusable; names the file, field and reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Where the daemon keeps its state (journal, compiled-code cache).
    pub data_dir: PathBuf,
    pub plugins: PluginsConfig,
}

/// `[plugins]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory of plugin packages; `<world>.nvplugin` or any
    /// `*.nvplugin` whose manifest names the world is installed for it.
    pub dir: PathBuf,
    /// Directory of trusted signer public keys (`*.pub`, SPKI PEM).
    pub trusted_keys_dir: PathBuf,
    /// Size bound of the decision journal, in bytes (0 disables it).
    pub journal_max_bytes: u64,
    /// Sandbox limits.
    pub runtime: RuntimeConfig,
    /// Per-world plugin settings: `[plugins.settings.scheduler] strategy = "pack"`.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/nasvisor"),
            plugins: PluginsConfig::default(),
        }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("/usr/lib/nasvisor/plugins"),
            trusted_keys_dir: PathBuf::from("/etc/nasvisor/trusted-keys"),
            journal_max_bytes: 16 * 1024 * 1024,
            runtime: RuntimeConfig::default(),
            settings: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parses and checks a configuration text. `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.plugins
            .runtime
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "plugins.runtime".into(),
                reason,
            })?;
        for world in cfg.plugins.settings.keys() {
            world
                .parse::<nasvisor_plugin_sdk::World>()
                .map_err(|reason| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    field: format!("plugins.settings.{world}"),
                    reason,
                })?;
        }
        Ok(cfg)
    }

    /// Loads `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::parse(&text, p)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(
            Config::parse("", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse(
            "[plugins]\njournal-max-bytes = \"big\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("journal-max-bytes"), "{e}");
        let e =
            Config::parse("[plugins.runtime]\ndeadline-ms = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("deadline-ms"), "{e}");
        let e = Config::parse(
            "[plugins.settings.schedular]\nx = \"1\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("plugins.settings.schedular"), "{e}");
        let e = Config::parse("data-dri = \"/x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("data-dri"), "{e}");
    }

    #[test]
    fn settings_parse() {
        let c = Config::parse(
            "data-dir = \"/tmp/nv\"\n[plugins.settings.scheduler]\nstrategy = \"pack\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.plugins.settings["scheduler"]["strategy"], "pack");
    }
}
