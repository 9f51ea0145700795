//! The CLI's own configuration: named remotes, like `incus remote`. A
//! remote is an endpoint, how to trust its certificate (a pinned SHA-256
//! fingerprint or a CA file) and an API token.
//!
//! One TOML file, `$NASVISOR_CONFIG`, else
//! `$XDG_CONFIG_HOME/nasvisor/config.toml`, else
//! `~/.config/nasvisor/config.toml`:
//!
//! ```toml
//! default-remote = "nas1"
//!
//! [remotes.nas1]
//! endpoint = "https://nas1.lan:8443"
//! fingerprint = "3F:A2:..."   # or: ca-cert = "/etc/ssl/nas1.pem"
//! token = "..."
//! ```
//!
//! The file holds tokens: it is written mode 0600 (its directory 0700),
//! always whole (a temporary file renamed over it), and one that other users
//! can read is refused. Unknown keys are refused too, naming the file, the
//! field and the reason. Tokens never appear in `Debug` output or in errors.
//!
//! Self-contained (no clap, no network): `nasvisor remote` and the
//! connection options read it, and a future `nasvisor login` can store what
//! it obtains with [`Config::save_remote`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The variable that names the config file.
pub const CONFIG_ENV: &str = "NASVISOR_CONFIG";

/// What the config file begins with.
const HEADER: &str = "# nasvisor CLI remotes (`nasvisor remote --help`).\n\
# It holds API tokens: keep it mode 0600.\n\n";

/// An API token: a secret, never shown by `Debug` nor in errors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// The token from text, trimmed (a file or a line typed in ends with a
    /// newline); see [`Token::check`].
    pub fn new(text: &str) -> Token {
        Token(text.trim().to_string())
    }

    /// Why the token cannot be sent as a bearer token, if it cannot.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Err("the token is empty")
        } else if self.0.bytes().any(|b| !b.is_ascii_graphic()) {
            Err("the token contains spaces or control characters")
        } else {
            Ok(())
        }
    }

    /// The secret itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;

    /// Any text: checked when used ([`Token::check`]), so that a parse
    /// error never echoes the secret.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token::new(s))
    }
}

/// How a remote's server certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256 fingerprint (`AA:BB:...`).
    Fingerprint(String),
    /// Certificates signed by (or equal to) the PEM certificates in a file.
    CaCert(PathBuf),
}

/// A named nasvisord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its admin endpoint, `https://host:port`.
    pub endpoint: String,
    /// How its certificate is trusted.
    pub trust: Trust,
    /// Its API token.
    pub token: Token,
}

/// The remotes of one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    path: PathBuf,
    default_remote: Option<String>,
    remotes: BTreeMap<String, Remote>,
}

/// A config file that cannot be used, or a remote that is not there.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No place for the file: none of the variables is set.
    #[error("no place for the CLI config file: set NASVISOR_CONFIG, XDG_CONFIG_HOME or HOME")]
    NoLocation,
    /// Reading or writing failed.
    #[error("{}: cannot {doing}: {error}", path.display())]
    Io {
        /// The file (or its directory).
        path: PathBuf,
        /// `read it`, `write it`, ...
        doing: &'static str,
        /// Why.
        error: std::io::Error,
    },
    /// Other users may read (or write) the file, which holds tokens.
    #[error(
        "{}: other users can access this file (mode {mode:04o}) and it holds API tokens; \
         run `chmod 600 {}` (and change the tokens if others may have read them)",
        path.display(), path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not valid TOML, or a field is wrong or unknown.
    #[error("{}: {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field at fault, dotted (`remotes.nas1.endpoint`); `.` for
        /// the file as a whole.
        field: String,
        /// Why.
        reason: String,
    },
    /// No remote of that name.
    #[error("no remote named {name:?} in {} (see `nasvisor remote list`)", path.display())]
    NoSuchRemote {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// A remote of that name exists already.
    #[error(
        "a remote named {name:?} exists in {} (remove it first: nasvisor remote remove {name})",
        path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// A name that cannot name a remote.
    #[error("remote name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
}

/// The file's layout: what serde reads and writes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_remote: Option<String>,
    #[serde(default)]
    remotes: BTreeMap<String, FileRemote>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRemote {
    endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_cert: Option<PathBuf>,
    token: Token,
}

/// The config file's path from the environment (`var` reads a variable):
/// `$NASVISOR_CONFIG`, `$XDG_CONFIG_HOME/nasvisor/config.toml`, or
/// `$HOME/.config/nasvisor/config.toml`. Empty variables count as unset.
pub fn path_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, ConfigError> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = set(CONFIG_ENV) {
        return Ok(p);
    }
    let dir = match set("XDG_CONFIG_HOME") {
        Some(x) => x,
        None => set("HOME").ok_or(ConfigError::NoLocation)?.join(".config"),
    };
    Ok(dir.join("nasvisor/config.toml"))
}

/// The config file's path from this process's environment.
pub fn path() -> Result<PathBuf, ConfigError> {
    path_from(|v| std::env::var_os(v))
}

/// Checks a remote's name: letters, digits, `-`, `_` and `.`, starting
/// with a letter or a digit, at most 63 characters (no `:`, which may
/// prefix names on the command line one day).
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    let bad = |reason| {
        Err(ConfigError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 63 {
        return bad("give 1 to 63 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("use letters, digits, '-', '_' and '.' only");
    }
    Ok(())
}

/// Why `endpoint` is not an admin endpoint, if it is not: an `https://`
/// URL with a host (a path is kept, for a proxy that serves nasvisord
/// under one), without user, query or fragment.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &endpoint[8..])
        .ok_or("must be an https:// URL (nasvisord serves HTTPS only)")?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err("has no host".into());
    }
    if rest.contains(['?', '#', '@']) || rest.contains(char::is_whitespace) {
        return Err("give the scheme, host, port and path only (https://host:8443)".into());
    }
    Ok(())
}

/// A SHA-256 fingerprint (`aa:bb..`, `AABB..`) as nasvisord prints it:
/// upper-case hex pairs joined by colons. `None` unless 64 hex digits.
pub fn canonical_fingerprint(fp: &str) -> Option<String> {
    let hex: Vec<u8> = fp
        .trim()
        .bytes()
        .filter(|b| *b != b':')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let pairs: Vec<&str> = hex
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Some(pairs.join(":"))
}

impl Config {
    /// No remotes, to be saved at `path`.
    pub fn empty(path: PathBuf) -> Config {
        Config {
            path,
            default_remote: None,
            remotes: BTreeMap::new(),
        }
    }

    /// The file at `path`; no remotes when there is no file. Refuses a file
    /// that other users can access, or one that is not valid.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let io = |doing, error| ConfigError::Io {
            path: path.to_path_buf(),
            doing,
            error,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::empty(path.to_path_buf()))
            }
            Err(e) => return Err(io("read it", e)),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| io("read it", e))?;
        Config::parse(&text, path)
    }

    /// Reads a config text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        let file: File =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let mut reason = if field.ends_with(".token") {
                    // The message may quote the value: never show a token.
                    "must be a string (the value is not shown)".to_string()
                } else {
                    inner.message().trim().replace('\n', " ")
                };
                if let Some(span) = inner.span() {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                    reason.push_str(&format!(" (line {line})"));
                }
                invalid(field, reason)
            })?;
        let mut remotes = BTreeMap::new();
        for (name, r) in file.remotes {
            let field = |f: &str| format!("remotes.{name}.{f}");
            check_name(&name).map_err(|e| invalid(format!("remotes.{name}"), e.to_string()))?;
            check_endpoint(&r.endpoint).map_err(|reason| {
                invalid(field("endpoint"), format!("{:?} {reason}", r.endpoint))
            })?;
            let trust = match (r.fingerprint, r.ca_cert) {
                (Some(fp), None) => {
                    Trust::Fingerprint(canonical_fingerprint(&fp).ok_or_else(|| {
                        invalid(
                            field("fingerprint"),
                            format!("{fp:?} is not a SHA-256 fingerprint (64 hex digits)"),
                        )
                    })?)
                }
                (None, Some(ca)) if ca.is_absolute() => Trust::CaCert(ca),
                (None, Some(ca)) => {
                    return Err(invalid(
                        field("ca-cert"),
                        format!("{} is not an absolute path", ca.display()),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("remotes.{name}"),
                        "give either fingerprint or ca-cert, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        format!("remotes.{name}"),
                        "missing fingerprint or ca-cert (how to trust its certificate)".into(),
                    ))
                }
            };
            r.token
                .check()
                .map_err(|reason| invalid(field("token"), reason.into()))?;
            let endpoint = r.endpoint.trim_end_matches('/').to_string();
            remotes.insert(
                name,
                Remote {
                    endpoint,
                    trust,
                    token: r.token,
                },
            );
        }
        if let Some(d) = &file.default_remote {
            if !remotes.contains_key(d) {
                return Err(invalid(
                    "default-remote".into(),
                    format!("{d:?} is not one of the remotes"),
                ));
            }
        }
        Ok(Config {
            path: path.to_path_buf(),
            default_remote: file.default_remote,
            remotes,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remotes by name.
    pub fn remotes(&self) -> &BTreeMap<String, Remote> {
        &self.remotes
    }

    /// The default remote's name, if one is set.
    pub fn default_name(&self) -> Option<&str> {
        self.default_remote.as_deref()
    }

    /// The remote named `name`.
    pub fn remote(&self, name: &str) -> Result<&Remote, ConfigError> {
        self.remotes
            .get(name)
            .ok_or_else(|| ConfigError::NoSuchRemote {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The default remote, with its name.
    pub fn default_remote(&self) -> Option<(&str, &Remote)> {
        let name = self.default_remote.as_deref()?;
        self.remotes.get(name).map(|r| (name, r))
    }

    /// Adds the remote `name`, or replaces the one of that name, and writes
    /// the file. The one way remotes are stored: `nasvisor remote add` uses
    /// it, and so can a future `nasvisor login`.
    pub fn save_remote(&mut self, name: &str, remote: Remote) -> Result<(), ConfigError> {
        check_name(name)?;
        self.remotes.insert(name.to_string(), remote);
        self.save()
    }

    /// Refuses `name` when a remote has it already.
    pub fn ensure_new(&self, name: &str) -> Result<(), ConfigError> {
        check_name(name)?;
        if self.remotes.contains_key(name) {
            return Err(ConfigError::Exists {
                path: self.path.clone(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Removes the remote `name` (and makes none the default if it was),
    /// and writes the file; whether it was the default.
    pub fn remove_remote(&mut self, name: &str) -> Result<bool, ConfigError> {
        self.remote(name)?;
        self.remotes.remove(name);
        let was_default = self.default_remote.as_deref() == Some(name);
        if was_default {
            self.default_remote = None;
        }
        self.save()?;
        Ok(was_default)
    }

    /// Makes `name` the default remote and writes the file.
    pub fn set_default(&mut self, name: &str) -> Result<(), ConfigError> {
        self.remote(name)?;
        self.default_remote = Some(name.to_string());
        self.save()
    }

    /// The file's text.
    fn to_text(&self) -> Result<String, ConfigError> {
        let file = File {
            default_remote: self.default_remote.clone(),
            remotes: self
                .remotes
                .iter()
                .map(|(name, r)| {
                    let (fingerprint, ca_cert) = match &r.trust {
                        Trust::Fingerprint(fp) => (Some(fp.clone()), None),
                        Trust::CaCert(ca) => (None, Some(ca.clone())),
                    };
                    let remote = FileRemote {
                        endpoint: r.endpoint.clone(),
                        fingerprint,
                        ca_cert,
                        token: r.token.clone(),
                    };
                    (name.clone(), remote)
                })
                .collect(),
        };
        let body = toml::to_string(&file).map_err(|e| ConfigError::Invalid {
            path: self.path.clone(),
            field: ".".into(),
            reason: format!("cannot be written: {e}"),
        })?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Writes the file whole: a temporary file (mode 0600) in the same
    /// directory (created mode 0700 if missing), synced, then renamed over
    /// the file, so that a reader sees the old file or the new one.
    pub fn save(&self) -> Result<(), ConfigError> {
        let text = self.to_text()?;
        let io = |path: &Path, doing, error| ConfigError::Io {
            path: path.to_path_buf(),
            doing,
            error,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, "create its directory", e))?;
        // tempfile creates the file mode 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.toml.")
            .tempfile_in(dir)
            .map_err(|e| io(dir, "create a file in it", e))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| io(tmp.path(), "write it", e))?;
        tmp.persist(&self.path)
            .map_err(|e| io(&self.path, "replace it", e.error))?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, "sync it", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "3F:A2:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";

    fn remote(endpoint: &str, token: &str) -> Remote {
        Remote {
            endpoint: endpoint.into(),
            trust: Trust::Fingerprint(FP.into()),
            token: Token::new(token),
        }
    }

    fn parse_err(text: &str) -> String {
        Config::parse(text, Path::new("/c/config.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_path_follows_nasvisor_config_then_xdg_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        static ALL: [(&str, &str); 3] = [
            (CONFIG_ENV, "/x/c.toml"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(path_from(env(&ALL)).unwrap(), Path::new("/x/c.toml"));
        assert_eq!(
            path_from(env(&ALL[1..])).unwrap(),
            Path::new("/xdg/nasvisor/config.toml")
        );
        assert_eq!(
            path_from(env(&[
                (CONFIG_ENV, ""),
                ("XDG_CONFIG_HOME", ""),
                ("HOME", "/home/u")
            ]))
            .unwrap(),
            Path::new("/home/u/.config/nasvisor/config.toml")
        );
        assert!(matches!(path_from(env(&[])), Err(ConfigError::NoLocation)));
    }

    #[test]
    fn a_saved_config_reads_back_the_same_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut c = Config::empty(path.clone());
        c.save_remote("nas1", remote("https://nas1:8443", "s3cret"))
            .unwrap();
        c.save_remote(
            "nas2",
            Remote {
                endpoint: "https://[fd00::2]:8443".into(),
                trust: Trust::CaCert("/etc/ca.pem".into()),
                token: Token::new("t2"),
            },
        )
        .unwrap();
        c.set_default("nas2").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        let back = Config::load(&path).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.default_remote().unwrap().0, "nas2");
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("config.toml")]);
        // Removing the default leaves no default.
        let mut c = back;
        assert!(c.remove_remote("nas2").unwrap());
        assert_eq!(Config::load(&path).unwrap().default_remote(), None);
        assert!(matches!(
            c.remove_remote("nas2"),
            Err(ConfigError::NoSuchRemote { .. })
        ));
    }

    #[test]
    fn a_config_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        Config::empty(path.clone()).save().unwrap();
        assert!(Config::load(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
        assert!(e.contains("mode 0640"), "{e}");
        assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
    }

    #[test]
    fn a_missing_config_has_no_remotes() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&dir.path().join("none.toml")).unwrap();
        assert!(c.remotes().is_empty());
        assert_eq!(c.default_remote(), None);
    }

    #[test]
    fn bad_configs_name_the_file_the_field_and_the_reason() {
        let ok = format!(
            "[remotes.a]\nendpoint = \"https://a:8443\"\nfingerprint = \"{FP}\"\ntoken = \"t\"\n"
        );
        assert!(Config::parse(&ok, Path::new("c")).is_ok());
        let e = parse_err(&format!("{ok}colour = \"red\"\n"));
        assert!(
            e.starts_with("/c/config.toml: remotes.a.colour: unknown field `colour`"),
            "{e}"
        );
        assert!(e.ends_with("(line 5)"), "{e}");
        let e = parse_err(&ok.replace("https://a:8443", "http://a:8443"));
        assert!(
            e.starts_with(
                "/c/config.toml: remotes.a.endpoint: \"http://a:8443\" must be an https:// URL"
            ),
            "{e}"
        );
        let e = parse_err(&ok.replace(FP, "12:34"));
        assert!(
            e.starts_with("/c/config.toml: remotes.a.fingerprint: \"12:34\" is not"),
            "{e}"
        );
        let e = parse_err(&ok.replace("\"t\"", "\"a b\""));
        assert_eq!(
            e,
            "/c/config.toml: remotes.a.token: the token contains spaces or control characters"
        );
        // A token of the wrong type is not quoted back.
        let e = parse_err(&ok.replace("\"t\"", "123456789"));
        assert!(
            e.starts_with("/c/config.toml: remotes.a.token: must be a string"),
            "{e}"
        );
        assert!(!e.contains("123456789"), "{e}");
        let e = parse_err(&format!("default-remote = \"b\"\n{ok}"));
        assert_eq!(
            e,
            "/c/config.toml: default-remote: \"b\" is not one of the remotes"
        );
        let e = parse_err("[remotes.a]\nendpoint = \"https://a\"\ntoken = \"t\"\n");
        assert!(
            e.starts_with("/c/config.toml: remotes.a: missing fingerprint or ca-cert"),
            "{e}"
        );
        let e = parse_err("[remotes.a\n");
        assert!(
            e.starts_with("/c/config.toml: .: ") && e.contains("(line 1)"),
            "{e}"
        );
    }

    #[test]
    fn tokens_stay_out_of_debug_output() {
        let r = remote("https://a:8443", "s3cret-token");
        let mut c = Config::empty("c".into());
        c.remotes.insert("a".into(), r.clone());
        for text in [format!("{r:?}"), format!("{c:?}"), format!("{:?}", r.token)] {
            assert!(!text.contains("s3cret-token"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn names_endpoints_and_fingerprints_are_checked() {
        assert!(check_name("nas-1.lan_b").is_ok());
        for bad in ["", "-a", "a:b", "a b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_endpoint("https://nas1:8443").is_ok());
        assert!(check_endpoint("HTTPS://nas1:8443/").is_ok());
        assert!(check_endpoint("https://proxy/nasvisor").is_ok());
        for bad in [
            "http://a",
            "https://",
            "https:///a",
            "https://u@a",
            "https://a?x",
            "nas1:8443",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
        let plain = FP.replace(':', "").to_lowercase();
        assert_eq!(canonical_fingerprint(&plain).as_deref(), Some(FP));
        assert_eq!(canonical_fingerprint("12:34"), None);
    }
}
