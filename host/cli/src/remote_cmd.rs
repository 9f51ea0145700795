//! `nasvisor remote`: named nasvisords in the CLI's config file (module
//! [`crate::config`]), like `incus remote`: add (pinning the server's
//! certificate), list, show, switch (the default remote) and remove.
//! Tokens are stored, never printed.

use crate::api::client::{self, CliError, CliResult};
use crate::api::render::{cell, Out, Render};
use crate::api::table;
use crate::api::target::ApiOpts;
use crate::config::{self, Config, Remote, Token, Trust};
use clap::Subcommand;
use serde::Serialize;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

/// The most read from stdin as a token.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

#[derive(Debug, Subcommand)]
pub enum RemoteCmd {
    /// Add a remote: an endpoint, how to trust its certificate and a token.
    ///
    /// The certificate is trusted by --fingerprint or --ca-cert; without
    /// either, the CLI connects once, shows the certificate's SHA-256
    /// fingerprint and asks (on a terminal; otherwise give
    /// --accept-certificate). The token comes from --token-file (or
    /// NASVISOR_TOKEN), else from standard input when it is not a terminal,
    /// else from a prompt that does not echo.
    Add {
        /// Its name: letters, digits, '-', '_' and '.'.
        name: String,
        /// Its admin endpoint, https://HOST:8443.
        endpoint: String,
        /// Trust the certificate the server presents now without asking
        /// (check its fingerprint against the one nasvisord printed).
        #[arg(long)]
        accept_certificate: bool,
        /// Log in as this user (its password is asked for) and store a new
        /// API token of it, named cli-<this machine>, instead of a token
        /// given.
        #[arg(long)]
        user: Option<String>,
        /// With --user: read the password from the first line of standard
        /// input.
        #[arg(long, requires = "user")]
        password_stdin: bool,
    },
    /// The remotes (never their tokens).
    List,
    /// One remote (never its token).
    Show { name: String },
    /// Make a remote the default: commands without --remote or --endpoint
    /// talk to it.
    Switch { name: String },
    /// Remove a remote (and its token) from the config file.
    Remove { name: String },
}

/// A remote as `remote list` and `remote show` print it: all but its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteView {
    /// Its name.
    pub name: String,
    /// Its admin endpoint.
    pub endpoint: String,
    /// The pinned SHA-256 fingerprint of its certificate.
    pub fingerprint: Option<String>,
    /// The CA file its certificate is checked against.
    pub ca_cert: Option<PathBuf>,
    /// Whether it is the default remote.
    pub default: bool,
}

impl RemoteView {
    fn of(config: &Config, name: &str, r: &Remote) -> RemoteView {
        let (fingerprint, ca_cert) = match &r.trust {
            Trust::Fingerprint(fp) => (Some(fp.clone()), None),
            Trust::CaCert(ca) => (None, Some(ca.clone())),
        };
        RemoteView {
            name: name.to_string(),
            endpoint: r.endpoint.clone(),
            fingerprint,
            ca_cert,
            default: config.default_name() == Some(name),
        }
    }

    /// The trust in a few words: the fingerprint's start, or the CA file.
    fn trust(&self) -> String {
        match (&self.fingerprint, &self.ca_cert) {
            (Some(fp), _) => format!("pin {}...", fp.get(..14).unwrap_or(fp)),
            (None, Some(ca)) => format!("ca {}", ca.display()),
            (None, None) => "-".into(),
        }
    }
}

impl Render for RemoteView {
    const COLUMNS: &'static [&'static str] = &["name", "endpoint", "trust", "default"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.endpoint),
            self.trust(),
            cell(&self.default),
        ]
    }

    fn show(&self) -> String {
        table::fields(&[
            ("name", cell(&self.name)),
            ("endpoint", cell(&self.endpoint)),
            ("fingerprint", cell(&self.fingerprint)),
            ("ca-cert", cell(&self.ca_cert)),
            ("token", "stored (not shown)".into()),
            ("default", cell(&self.default)),
        ])
    }
}

fn view(config: &Config, name: &str) -> CliResult<RemoteView> {
    Ok(RemoteView::of(config, name, config.remote(name)?))
}

/// Runs `nasvisor remote ...`; `opts` gives `add` its --fingerprint,
/// --ca-cert and token options.
pub fn run(cmd: RemoteCmd, opts: &ApiOpts, out: Out) -> CliResult<()> {
    let mut config = Config::load(&config::path()?)?;
    match cmd {
        RemoteCmd::Add {
            name,
            endpoint,
            accept_certificate,
            user,
            password_stdin,
        } => {
            let login = user.map(|u| (u, password_stdin));
            add(
                &mut config,
                opts,
                &name,
                &endpoint,
                accept_certificate,
                login,
                out,
            )?
        }
        RemoteCmd::List => {
            let views: Vec<RemoteView> = config
                .remotes()
                .iter()
                .map(|(name, r)| RemoteView::of(&config, name, r))
                .collect();
            out.list(&views);
        }
        RemoteCmd::Show { name } => out.show(&view(&config, &name)?),
        RemoteCmd::Switch { name } => {
            config.set_default(&name)?;
            out.done(&view(&config, &name)?, |v| {
                format!("default remote: {} ({})", v.name, v.endpoint)
            });
        }
        RemoteCmd::Remove { name } => {
            let was_default = config.remove_remote(&name)?;
            out.note(|| {
                if was_default {
                    format!(
                        "remote {name} removed; it was the default, and now there is none \
                         (choose one with: nasvisor remote switch NAME)"
                    )
                } else {
                    format!("remote {name} removed")
                }
            });
        }
    }
    Ok(())
}

fn add(
    config: &mut Config,
    opts: &ApiOpts,
    name: &str,
    endpoint: &str,
    accept_certificate: bool,
    login: Option<(String, bool)>,
    out: Out,
) -> CliResult<()> {
    config.ensure_new(name)?;
    config::check_endpoint(endpoint)
        .map_err(|why| CliError::msg(format!("endpoint {endpoint:?}: {why}")))?;
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let trust = match opts.trust()? {
        Some(Trust::CaCert(ca)) => {
            client::check_ca_file(&ca, "--ca-cert")?;
            // Stored absolute: the CLI runs from any directory.
            let abs = std::path::absolute(&ca)
                .map_err(|e| CliError::msg(format!("--ca-cert {}: {e}", ca.display())))?;
            Trust::CaCert(abs)
        }
        Some(pin) => pin,
        None => Trust::Fingerprint(confirm_certificate(&endpoint, accept_certificate)?),
    };
    let token = match (login, opts.token()?) {
        (Some((user, stdin)), _) => login_token(&endpoint, &trust, &user, stdin)?,
        (None, Some(t)) => t,
        (None, None) => read_token(name)?,
    };
    config.save_remote(
        name,
        Remote {
            endpoint,
            trust,
            token,
        },
    )?;
    out.done(&view(config, name)?, |v| {
        format!(
            "remote {name} ({}) added to {}; use it with --remote {name}, or make it the \
             default: nasvisor remote switch {name}",
            v.endpoint,
            config.path().display()
        )
    });
    Ok(())
}

/// Shows the fingerprint of the certificate `endpoint` presents, and
/// returns it once the user accepts it (`accept`, or `y` on a terminal).
fn confirm_certificate(endpoint: &str, accept: bool) -> CliResult<String> {
    let fp = client::server_fingerprint(endpoint)?;
    eprintln!("certificate fingerprint of {endpoint}: {fp}");
    if accept {
        return Ok(fp);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::msg(format!(
            "the certificate of {endpoint} is not trusted yet: compare its fingerprint {fp} \
             with the one nasvisord printed at its first start, then give --fingerprint {fp} \
             or --accept-certificate"
        )));
    }
    eprint!("Is it the one nasvisord printed at its first start? Trust it (y/N)? ");
    let mut answer = String::new();
    stdin
        .read_line(&mut answer)
        .map_err(|e| CliError::msg(format!("reading the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(fp)
    } else {
        Err(CliError::msg("certificate not trusted: remote not added"))
    }
}

/// Logs in as `user` and makes an API token of it for this CLI; the
/// session used is ended.
fn login_token(endpoint: &str, trust: &Trust, user: &str, stdin: bool) -> CliResult<Token> {
    use nasvisor_api_types::{Login, NewTokenView, SessionView, TokenCreate};
    let server_trust = match trust {
        Trust::Fingerprint(fp) => client::ServerTrust::Pin(fp.clone()),
        Trust::CaCert(path) => client::ServerTrust::CaFile {
            path: path.clone(),
            what: "--ca-cert".into(),
        },
    };
    let anon = client::Client::anonymous(endpoint, &server_trust)?;
    let password =
        crate::api::access::read_password(&format!("password of {user} (not echoed): "), stdin)?;
    let session: SessionView = anon.send(
        "POST",
        "/api/v1/auth/login",
        &Login {
            user: user.to_string(),
            password,
        },
    )?;
    let c = anon.with_token(Token::new(&session.token));
    let machine = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| nasvisor_api_types::check_name("name", &format!("cli-{h}")).is_ok())
        .unwrap_or_else(|| "cli".into());
    let name = if machine == "cli" {
        machine
    } else {
        format!("cli-{machine}")
    };
    let made: NewTokenView = c.send(
        "POST",
        "/api/v1/tokens",
        &TokenCreate {
            name,
            role: None,
            expires_in_s: None,
            user: None,
        },
    )?;
    // The token is what the remote keeps; the session is not needed.
    if let Err(e) = c.call::<()>("POST", "/api/v1/auth/logout") {
        tracing::warn!(error = %e, "ending the login session");
    }
    eprintln!(
        "logged in as {user} ({}); API token {} stored",
        session.role, made.details.id
    );
    Ok(Token::new(&made.token))
}

/// The token of a new remote, when no option gave it: standard input when
/// it is not a terminal, else a prompt without echo.
fn read_token(name: &str) -> CliResult<Token> {
    let stdin = std::io::stdin();
    let (text, from) = if stdin.is_terminal() {
        let t = rpassword::prompt_password(format!("admin token of {name} (not echoed): "))
            .map_err(|e| CliError::msg(format!("reading the token: {e}")))?;
        (t, "the terminal")
    } else {
        let mut t = String::new();
        stdin
            .lock()
            .take(MAX_TOKEN_BYTES)
            .read_to_string(&mut t)
            .map_err(|e| CliError::msg(format!("reading the token from standard input: {e}")))?;
        (t, "standard input")
    };
    let token = Token::new(&text);
    token.check().map_err(|why| {
        CliError::msg(format!(
            "the token read from {from}: {why} (give it with --token-file, NASVISOR_TOKEN or \
             on standard input)"
        ))
    })?;
    Ok(token)
}
