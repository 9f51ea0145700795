//! Users, API tokens, the caller, passwords and the audit log:
//! `nasvisor whoami`, `passwd`, `user ...`, `token ...`, `audit list`.
//! Passwords are read from a prompt that does not echo, or with
//! `--password-stdin` from standard input; never from the command line.

use super::client::{enc, CliError, CliResult, Client};
use super::render::{cell, Out, Render};
use super::table;
use clap::Subcommand;
use nasvisor_api_types::{
    ApiTokenView, AuditView, CallerView, NewTokenView, PasswordChange, Role, TokenCreate,
    UserCreate, UserUpdate, UserView,
};
use std::io::{BufRead, IsTerminal};

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Every user (admins only).
    List,
    /// Create a user; its password is asked for (or read with
    /// --password-stdin).
    Create {
        /// User name (the login).
        name: String,
        /// viewer (read only), operator (power, consoles, migrations) or
        /// admin (everything).
        #[arg(long, value_parser = role)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role, state or password; its sessions end.
    Edit {
        /// User name.
        name: String,
        /// New role.
        #[arg(long, value_parser = role)]
        role: Option<Role>,
        /// Disable the user: no login, no token of it accepted.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Enable the user again.
        #[arg(long)]
        enable: bool,
        /// Set a new password (asked for, or read with --password-stdin).
        #[arg(long)]
        password: bool,
        /// Read the new password from the first line of standard input.
        #[arg(long, requires = "password")]
        password_stdin: bool,
    },
    /// Delete a user, its tokens and its sessions.
    Delete {
        /// User name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// API tokens: yours; every user's for an admin.
    List,
    /// Create an API token; its secret is printed once.
    Create {
        /// A name to tell it by (e.g. backup-script).
        name: String,
        /// Its role (at most the user's; the user's by default).
        #[arg(long, value_parser = role)]
        role: Option<Role>,
        /// Its lifetime: seconds, or with a unit (30m, 12h, 90d).
        #[arg(long, value_parser = duration_s)]
        expires_in: Option<u64>,
        /// The user it acts as (admins only; yourself by default).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API token: it is refused on every host once this returns.
    Revoke {
        /// The token's id (token list).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Audit entries, oldest first: every change asked of the API and every
    /// login (admins only).
    List(super::event::LogList),
}

fn role(s: &str) -> Result<Role, String> {
    super::api_enum::<Role>(s).map_err(|_| "must be viewer, operator or admin".to_string())
}

/// `90`, `30m`, `12h`, `90d` as seconds.
pub fn duration_s(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 3600, 30m, 12h, 90d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} must be more than 0 and not absurdly long"))
}

/// A password: the first line of standard input with `from_stdin`, else a
/// prompt without echo (a terminal is needed then).
pub fn read_password(prompt: &str, from_stdin: bool) -> CliResult<String> {
    let stdin = std::io::stdin();
    let p = if from_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::msg(format!("reading the password from standard input: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if stdin.is_terminal() {
        rpassword::prompt_password(prompt)
            .map_err(|e| CliError::msg(format!("reading the password: {e}")))?
    } else {
        return Err(CliError::msg(
            "no terminal to ask for the password: give --password-stdin and the password on \
             standard input",
        ));
    };
    if p.is_empty() {
        return Err(CliError::msg("the password is empty"));
    }
    Ok(p)
}

/// A new password, asked twice on a terminal.
fn new_password(from_stdin: bool) -> CliResult<String> {
    let p = read_password("new password (not echoed): ", from_stdin)?;
    if !from_stdin {
        let again = read_password("again: ", false)?;
        if again != p {
            return Err(CliError::msg("the passwords differ"));
        }
    }
    Ok(p)
}

/// `nasvisor whoami`.
pub fn whoami(c: &Client, out: Out) -> CliResult<()> {
    let me: CallerView = c.get("/api/v1/auth/whoami")?;
    out.show(&me);
    Ok(())
}

/// `nasvisor passwd`: the caller's own password.
pub fn passwd(c: &Client, password_stdin: bool, out: Out) -> CliResult<()> {
    let current = if password_stdin {
        read_password("", true)?
    } else {
        // The bootstrap admin has none yet: an empty answer is fine then.
        rpassword::prompt_password("current password (empty if none is set): ")
            .map_err(|e| CliError::msg(format!("reading the password: {e}")))?
    };
    let new = new_password(password_stdin)?;
    let () = c.send(
        "POST",
        "/api/v1/auth/password",
        &PasswordChange { current, new },
    )?;
    out.note(|| "password changed; your sessions have ended".into());
    Ok(())
}

/// Runs `nasvisor user ...`.
pub fn run_user(c: &Client, cmd: UserCmd, out: Out) -> CliResult<()> {
    match cmd {
        UserCmd::List => out.list(&c.get::<Vec<UserView>>("/api/v1/users")?),
        UserCmd::Create {
            name,
            role,
            password_stdin,
        } => {
            let password = new_password(password_stdin)?;
            let u: UserView = c.send(
                "POST",
                "/api/v1/users",
                &UserCreate {
                    name,
                    password,
                    role,
                },
            )?;
            out.done(&u, |u| format!("user {} created ({})", u.name, u.role));
        }
        UserCmd::Edit {
            name,
            role,
            disable,
            enable,
            password,
            password_stdin,
        } => {
            let password = if password {
                Some(new_password(password_stdin)?)
            } else {
                None
            };
            let disabled = match (disable, enable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let u: UserView = c.send(
                "PATCH",
                &format!("/api/v1/users/{}", enc(&name)),
                &UserUpdate {
                    role,
                    password,
                    disabled,
                },
            )?;
            out.done(&u, |u| {
                format!(
                    "user {} is {}{}; its sessions have ended",
                    u.name,
                    u.role,
                    if u.disabled { ", disabled" } else { "" }
                )
            });
        }
        UserCmd::Delete { name } => {
            let () = c.call("DELETE", &format!("/api/v1/users/{}", enc(&name)))?;
            out.note(|| format!("user {name} deleted, with its tokens and sessions"));
        }
    }
    Ok(())
}

/// Runs `nasvisor token ...`.
pub fn run_token(c: &Client, cmd: TokenCmd, out: Out) -> CliResult<()> {
    match cmd {
        TokenCmd::List => out.list(&c.get::<Vec<ApiTokenView>>("/api/v1/tokens")?),
        TokenCmd::Create {
            name,
            role,
            expires_in,
            user,
        } => {
            let t: NewTokenView = c.send(
                "POST",
                "/api/v1/tokens",
                &TokenCreate {
                    name,
                    role,
                    expires_in_s: expires_in,
                    user,
                },
            )?;
            // The secret goes to stdout alone in a table, so that
            // `nasvisor token create x > file` stores just it.
            match out.doc() {
                Some(doc) => doc.print_item(&SecretOut::of(&t)),
                None => {
                    println!("{}", t.token);
                    eprintln!(
                        "token {} ({}, {} as {}) created; it is shown once: store it now",
                        t.details.id, t.details.name, t.details.role, t.details.user
                    );
                }
            }
        }
        TokenCmd::Revoke { id } => {
            let () = c.call("DELETE", &format!("/api/v1/tokens/{}", enc(&id)))?;
            out.note(|| format!("token {id} revoked"));
        }
    }
    Ok(())
}

/// A new token as `-o json|yaml` prints it: the view with its secret.
#[derive(serde::Serialize)]
struct SecretOut<'a> {
    token: &'a str,
    #[serde(flatten)]
    details: &'a ApiTokenView,
}

impl<'a> SecretOut<'a> {
    fn of(t: &'a NewTokenView) -> Self {
        Self {
            token: &t.token,
            details: &t.details,
        }
    }
}

/// Runs `nasvisor audit ...`.
pub fn run_audit(c: &Client, cmd: AuditCmd, out: Out) -> CliResult<()> {
    let AuditCmd::List(l) = cmd;
    super::event::list_log(c, "/api/v1/audit", &l, out, |a: &AuditView| a.seq)
}

impl Render for CallerView {
    const COLUMNS: &'static [&'static str] = &["user", "role", "via", "credential", "expires"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.user),
            cell(&self.role),
            cell(&self.via),
            cell(&self.credential),
            cell(&self.expires_at),
        ]
    }

    fn show(&self) -> String {
        table::fields(&[
            ("user", cell(&self.user)),
            ("role", cell(&self.role)),
            ("via", cell(&self.via)),
            ("credential", cell(&self.credential)),
            ("expires", cell(&self.expires_at)),
        ])
    }
}

impl Render for UserView {
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "role",
        "disabled",
        "password",
        "created",
        "password changed",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.name),
            cell(&self.role),
            cell(&self.disabled),
            if self.password_set { "set" } else { "none" }.into(),
            cell(&self.created_at),
            cell(&self.password_changed_at),
        ]
    }
}

impl Render for ApiTokenView {
    const COLUMNS: &'static [&'static str] = &[
        "id", "name", "user", "role", "created", "by", "expires", "expired",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.id),
            cell(&self.name),
            cell(&self.user),
            cell(&self.role),
            cell(&self.created_at),
            cell(&self.created_by),
            cell(&self.expires_at),
            cell(&self.expired),
        ]
    }
}

impl Render for AuditView {
    const COLUMNS: &'static [&'static str] = &[
        "seq", "time", "user", "role", "address", "host", "request", "status", "result",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.seq),
            cell(&self.time),
            cell(&self.user),
            cell(&self.role),
            cell(&self.address),
            cell(&self.host),
            cell(&self.request),
            cell(&self.status),
            cell(&self.result),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(duration_s("90"), Ok(90));
        assert_eq!(duration_s("30m"), Ok(1800));
        assert_eq!(duration_s("12h"), Ok(43_200));
        assert_eq!(duration_s("90d"), Ok(7_776_000));
        for bad in ["", "0", "5w", "h", "-3", "99999999999999999999d"] {
            assert!(duration_s(bad).is_err(), "{bad}");
        }
    }
}
