//! Which nasvisord a command talks to, how its certificate is trusted and
//! which token it is sent: the connection options ([`ApiOpts`]), the remote
//! they select from the config file, and the built-in defaults.
//!
//! Field by field (endpoint, trust, token), the first that gives one wins:
//!
//! 1. the options and their variables (`--endpoint`, `--fingerprint`,
//!    `--ca-cert`, `--token-file`, `NASVISOR_TOKEN`, ...);
//! 2. the remote named by `--remote` / `NASVISOR_REMOTE`;
//! 3. the default remote (`nasvisor remote switch`), unless `--endpoint`
//!    names another endpoint: its token and trust are never sent or used
//!    elsewhere than its own endpoint without being asked for by name;
//! 4. `https://127.0.0.1:8443`, trusting `<data-dir>/tls/cert.pem`.

use super::client::{CliError, CliResult, ServerTrust};
use crate::config::{self, Config, Remote, Token, Trust};
use clap::Args;
use std::path::PathBuf;

/// The endpoint without a remote or `--endpoint`.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:8443";
/// Default data directory of nasvisord (its certificate is `tls/cert.pem` in it).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nasvisor";

/// How to reach and authenticate to nasvisord (global options).
#[derive(Debug, Clone, Args)]
pub struct ApiOpts {
    /// A remote of the config file (`nasvisor remote list`); without it, the
    /// default remote.
    #[arg(long, global = true, env = "NASVISOR_REMOTE")]
    pub remote: Option<String>,
    /// nasvisord's admin endpoint [default: the remote's, else
    /// https://127.0.0.1:8443].
    #[arg(long, global = true, env = "NASVISOR_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The admin token. Hidden: it shows in the process list; use a remote,
    /// --token-file or NASVISOR_TOKEN.
    #[arg(long, global = true, env = "NASVISOR_TOKEN", hide = true)]
    pub token: Option<Token>,
    /// A file holding the admin token (or give the token itself in
    /// NASVISOR_TOKEN).
    #[arg(long, global = true, env = "NASVISOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM certificate (CA or the server's own) to trust.
    #[arg(long, global = true, env = "NASVISOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Pin the server certificate by its SHA-256 fingerprint (hex, colons optional,
    /// as nasvisord prints it).
    #[arg(long, global = true, env = "NASVISOR_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// nasvisord's data directory; its tls/cert.pem is trusted when neither
    /// a remote, --ca-cert nor --fingerprint says how.
    #[arg(long, global = true, env = "NASVISOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// A nasvisord to talk to, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://host:port`, without a trailing `/`.
    pub endpoint: String,
    /// How its certificate is trusted.
    pub trust: ServerTrust,
    /// The token sent to it.
    pub token: Token,
}

impl ApiOpts {
    /// The trust the options give: `--fingerprint` or `--ca-cert`.
    pub fn trust(&self) -> CliResult<Option<Trust>> {
        match (&self.fingerprint, &self.ca_cert) {
            (Some(_), Some(_)) => Err(CliError::msg(
                "give either --ca-cert or --fingerprint, not both",
            )),
            (Some(fp), None) => config::canonical_fingerprint(fp)
                .map(|fp| Some(Trust::Fingerprint(fp)))
                .ok_or_else(|| {
                    CliError::msg(format!(
                        "--fingerprint: {fp:?} is not a SHA-256 fingerprint: give 64 hex digits, \
                         colons optional (as nasvisord prints it: AA:BB:...)"
                    ))
                }),
            (None, Some(ca)) => Ok(Some(Trust::CaCert(ca.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// The token the options give: `--token` / `NASVISOR_TOKEN`, else the
    /// content of `--token-file`; checked.
    pub fn token(&self) -> CliResult<Option<Token>> {
        let (token, from) = match (&self.token, &self.token_file) {
            (Some(t), _) => (t.clone(), "the admin token".to_string()),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| CliError::msg(format!("--token-file {}: {e}", f.display())))?;
                (Token::new(&text), format!("--token-file {}", f.display()))
            }
            (None, None) => return Ok(None),
        };
        token
            .check()
            .map_err(|why| CliError::msg(format!("{from}: {why}")))?;
        Ok(Some(token))
    }

    /// Whether the options alone say all (endpoint, trust and token), so
    /// that no remote can add anything.
    fn complete(&self) -> bool {
        self.remote.is_none()
            && self.endpoint.is_some()
            && (self.fingerprint.is_some() || self.ca_cert.is_some())
            && (self.token.is_some() || self.token_file.is_some())
    }

    /// The target of a command: the options, then the remote, then the
    /// defaults (see the module's doc). The config file is read only when
    /// a remote may give something.
    pub fn target(&self) -> CliResult<Target> {
        let config = if self.complete() {
            None
        } else {
            Some(Config::load(&config::path()?)?)
        };
        resolve(self, config.as_ref())
    }
}

/// Two endpoints are the same one when they differ only in case or a
/// trailing `/`.
fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// The remote whose fields fill what the options leave out, with its name.
fn chosen<'a>(
    opts: &'a ApiOpts,
    config: Option<&'a Config>,
) -> CliResult<Option<(&'a str, &'a Remote)>> {
    let Some(config) = config else {
        return Ok(None);
    };
    if let Some(name) = &opts.remote {
        return Ok(Some((name.as_str(), config.remote(name)?)));
    }
    Ok(config.default_remote().filter(|(_, r)| {
        opts.endpoint
            .as_deref()
            .is_none_or(|e| same_endpoint(e, &r.endpoint))
    }))
}

/// [`ApiOpts::target`] with the config given (`None`: not read).
pub fn resolve(opts: &ApiOpts, config: Option<&Config>) -> CliResult<Target> {
    let remote = chosen(opts, config)?;
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| remote.map(|(_, r)| r.endpoint.clone()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    config::check_endpoint(&endpoint)
        .map_err(|why| CliError::msg(format!("--endpoint {endpoint:?}: {why}")))?;
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let token = match (opts.token()?, remote) {
        (Some(t), _) => t,
        (None, Some((_, r))) => r.token.clone(),
        (None, None) => {
            return Err(CliError::msg(
                "no admin token: add a remote (nasvisor remote add NAME ENDPOINT), or give \
                 --token-file or set NASVISOR_TOKEN or NASVISOR_TOKEN_FILE (nasvisord prints \
                 the token once, on its first start)",
            ))
        }
    };
    let trust = match (opts.trust()?, remote) {
        (Some(Trust::Fingerprint(fp)), _) => ServerTrust::Pin(fp),
        (Some(Trust::CaCert(path)), _) => ServerTrust::CaFile {
            path,
            what: "--ca-cert".into(),
        },
        (None, Some((name, r))) => match &r.trust {
            Trust::Fingerprint(fp) => ServerTrust::Pin(fp.clone()),
            Trust::CaCert(path) => ServerTrust::CaFile {
                path: path.clone(),
                what: format!("remote {name}: ca-cert"),
            },
        },
        (None, None) => default_trust(opts, &endpoint)?,
    };
    Ok(Target {
        endpoint,
        trust,
        token,
    })
}

/// The certificate in nasvisord's data directory, the trust of last resort.
fn default_trust(opts: &ApiOpts, endpoint: &str) -> CliResult<ServerTrust> {
    let default = opts.data_dir.join("tls/cert.pem");
    if !default.is_file() {
        return Err(CliError::msg(format!(
            "cannot verify {endpoint}: no --ca-cert or --fingerprint given and {} does not exist \
             (add a remote with nasvisor remote add, give the server certificate with --ca-cert / \
             NASVISOR_CA_CERT, or pin the fingerprint nasvisord prints at start with \
             --fingerprint / NASVISOR_FINGERPRINT)",
            default.display()
        )));
    }
    Ok(ServerTrust::CaFile {
        path: default,
        what: "server certificate".into(),
    })
}
