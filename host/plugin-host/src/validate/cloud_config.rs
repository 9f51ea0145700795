//! `user-data` and `vendor-data`: a `#cloud-config` document whose every key
//! is derived from the install request.
//!
//! Accepted top-level keys, each with the only values accepted:
//!
//! | key | value |
//! |---|---|
//! | `hostname` | the request's host name or its first label |
//! | `fqdn` | the request's host name |
//! | `preserve_hostname` | `false` |
//! | `manage_etc_hosts` | a boolean |
//! | `users` | exactly the requested users (below) |
//! | `package_update` | a boolean |
//! | `packages` | exactly the requested packages (strings) |
//! | `timezone` | the requested time zone |
//! | `ssh_pwauth` | a boolean; `true` only when a requested user has a password hash |
//! | `runcmd` | exactly one command, [`seed::ready_command`] of the ready marker |
//! | `final_message` | [`seed::final_message`] of the ready marker |
//!
//! Each user is a mapping (never the string `default` or a comma-separated
//! string) with `name`, and only: `groups` (exactly the requested ones),
//! `shell` (the requested one), `sudo` (one or more single-line rules, only
//! when the request grants sudo; else absent or `false`), `lock_passwd`
//! (`false` only with a requested hash), `passwd` or `hashed_passwd` (the
//! requested hash), `ssh_authorized_keys` (exactly the requested keys).
//!
//! Everything else is refused, among them `bootcmd`, `write_files`,
//! `chpasswd`, `password`, top-level `ssh_authorized_keys`, `ssh_keys`,
//! `ssh_import_id`, `user`, `groups`, `disable_root`, `apt`, `yum_repos`,
//! `ca_certs`, `mounts`, `power_state`, `phone_home`, `system_info`,
//! `merge_how`, and per user `plain_text_passwd`, `uid`, `homedir`,
//! `primary_group`, `ssh_import_id`, `ssh_redirect_user`, `doas`.
//!
//! In `user-data` everything the request asks for must be there (the
//! requested users, packages and time zone); `vendor-data` is optional
//! configuration that cloud-init merges under `user-data`, so there any of
//! these keys may be absent, but what is present follows the same rules.

use super::show;
use super::yaml::{self, Node};
use nasvisor_plugin_sdk::prelude::*;
use nasvisor_plugin_sdk::seed;
use std::collections::BTreeSet;

/// The first line of a cloud-config document.
const HEADER: &str = "#cloud-config";
/// Longest sudo rule accepted.
const MAX_SUDO_RULE: usize = 256;

/// Checks a `#cloud-config` seed file (`user-data`, or with `required` off,
/// `vendor-data`) against the request. `completion_marker` is the plan's
/// serial marker, if it waits for one.
pub(super) fn check(
    file: &str,
    text: &str,
    req: &InstallRequest,
    completion_marker: Option<&str>,
    required: bool,
) -> Result<(), String> {
    let first = text.split('\n').next().unwrap_or("");
    if first != HEADER {
        return Err(format!(
            "{file} must be a #cloud-config document (first line exactly {HEADER:?}); its first line is {} (shell scripts, MIME multipart, #include, #cloud-config-archive, Jinja templates and other formats are refused)",
            show(first)
        ));
    }
    let root = yaml::parse(file, text)?;
    let mut seen = BTreeSet::new();
    let mut runcmd_marker: Option<String> = None;
    let mut final_message: Option<&str> = None;
    let mut pwauth = false;
    for (k, v) in root.map(file)? {
        let path = format!("{file}.{k}");
        seen.insert(k.as_str());
        match k.as_str() {
            "hostname" => {
                let h = v.str(&path)?;
                if h != req.hostname && h != seed::short_hostname(&req.hostname) {
                    return Err(format!(
                        "{path} {} is not the requested host name {}",
                        show(h),
                        show(&req.hostname)
                    ));
                }
            }
            "fqdn" => equal(&path, v.str(&path)?, &req.hostname, "the requested host name")?,
            "preserve_hostname" => {
                if v.bool(&path)? {
                    return Err(format!(
                        "{path} is true: the image's host name would replace the requested one"
                    ));
                }
            }
            "manage_etc_hosts" | "package_update" => {
                v.bool(&path)?;
            }
            "ssh_pwauth" => pwauth = v.bool(&path)?,
            "users" => users(&path, v, req)?,
            "packages" => same_set(&path, v.strs(&path)?, req.packages.iter().map(String::as_str))?,
            "timezone" => match &req.timezone {
                Some(tz) => equal(&path, v.str(&path)?, tz, "the requested time zone")?,
                None => return Err(format!("{path} is set but the request names no time zone")),
            },
            "runcmd" => runcmd_marker = Some(runcmd(&path, v, completion_marker)?),
            "final_message" => final_message = Some(v.str(&path)?),
            other => {
                return Err(format!(
                    "{file}: the key {} is not accepted; the host accepts only hostname, fqdn, preserve_hostname, manage_etc_hosts, users, package_update, packages, timezone, ssh_pwauth, runcmd (the ready marker) and final_message, each derived from the request",
                    show(other)
                ))
            }
        }
    }
    if pwauth && !req.users.iter().any(|u| u.password_hash.is_some()) {
        return Err(format!(
            "{file}.ssh_pwauth is true but no requested user has a password"
        ));
    }
    if let Some(msg) = final_message {
        let markers = [completion_marker, runcmd_marker.as_deref()];
        if !markers
            .iter()
            .flatten()
            .any(|m| seed::final_message(m) == msg)
        {
            return Err(format!(
                "{file}.final_message {} is not the ready marker's message (see seed::final_message)",
                show(msg)
            ));
        }
    }
    if required {
        for (key, asked) in [
            ("users", !req.users.is_empty()),
            ("packages", !req.packages.is_empty()),
            ("timezone", req.timezone.is_some()),
        ] {
            if asked && !seen.contains(key) {
                return Err(format!("{file} lacks {key}, which the request asks for"));
            }
        }
    }
    Ok(())
}

fn equal(path: &str, got: &str, want: &str, what: &str) -> Result<(), String> {
    if got != want {
        return Err(format!("{path} {} is not {what} {}", show(got), show(want)));
    }
    Ok(())
}

/// `got` holds each of `want` once, and nothing else.
pub(super) fn same_set<'a>(
    path: &str,
    got: Vec<&str>,
    want: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let want: BTreeSet<&str> = want.into_iter().collect();
    let mut seen = BTreeSet::new();
    for g in &got {
        if !seen.insert(*g) {
            return Err(format!("{path} lists {} twice", show(g)));
        }
        if !want.contains(g) {
            return Err(format!(
                "{path} lists {}, which the request does not",
                show(g)
            ));
        }
    }
    if let Some(m) = want.iter().find(|w| !seen.contains(*w)) {
        return Err(format!("{path} lacks the requested {}", show(m)));
    }
    Ok(())
}

/// The ready-marker command; returns its marker.
fn runcmd(path: &str, v: &Node, completion_marker: Option<&str>) -> Result<String, String> {
    let items = v.seq(path)?;
    let [cmd] = items else {
        return Err(format!(
            "{path} has {} commands; the host accepts only the ready-marker command",
            items.len()
        ));
    };
    let argv = cmd.strs(&format!("{path}[0]"))?;
    let marker = argv.last().copied().unwrap_or("");
    if argv != seed::ready_command(marker) {
        return Err(format!(
            "{path}[0] is not the ready-marker command (see seed::ready_command); the host accepts no other command"
        ));
    }
    if marker.is_empty() || marker.len() > 256 || marker.chars().any(char::is_control) {
        return Err(format!(
            "{path}[0]: the ready marker must be 1 to 256 characters on one line"
        ));
    }
    if let Some(m) = completion_marker.filter(|m| *m != marker) {
        return Err(format!(
            "{path}[0] prints {} but the plan waits for {}",
            show(marker),
            show(m)
        ));
    }
    Ok(marker.to_string())
}

/// `users`: exactly the requested users.
fn users(path: &str, v: &Node, req: &InstallRequest) -> Result<(), String> {
    let items = match v {
        Node::Str(s) => {
            return Err(format!(
                "{path} is the string {}; users must be a list of mappings, one per requested user",
                show(s)
            ))
        }
        n => n.seq(path)?,
    };
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Node::Str(s) = item {
            return Err(format!(
                "{p} is the string {}; each user must be a mapping with a requested name (the image's default user is not created)",
                show(s)
            ));
        }
        names.push(user(&p, item, req)?);
    }
    same_set(path, names, req.users.iter().map(|u| u.name.as_str()))
}

/// One user: returns its name.
fn user<'n>(path: &str, v: &'n Node, req: &InstallRequest) -> Result<&'n str, String> {
    let entries = v.map(path)?;
    let name = entries
        .iter()
        .find(|(k, _)| k == "name")
        .ok_or_else(|| format!("{path} has no name"))?
        .1
        .str(&format!("{path}.name"))?;
    let want = req
        .users
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| format!("{path}.name {} is not a requested user", show(name)))?;
    let mut hash_given = false;
    let mut unlocked = false;
    let mut seen = BTreeSet::new();
    for (k, val) in entries {
        let p = format!("{path}.{k}");
        seen.insert(k.as_str());
        match k.as_str() {
            "name" => {}
            "groups" => same_set(&p, val.strs(&p)?, want.groups.iter().map(String::as_str))?,
            "shell" => match &want.shell {
                Some(sh) => equal(&p, val.str(&p)?, sh, "the requested shell")?,
                None => return Err(format!("{p} is set but the request names no shell")),
            },
            "sudo" => sudo(&p, val, want.sudo)?,
            "lock_passwd" => unlocked = !val.bool(&p)?,
            "passwd" | "hashed_passwd" => {
                if hash_given {
                    return Err(format!("{path} has both passwd and hashed_passwd"));
                }
                hash_given = true;
                match &want.password_hash {
                    Some(h) => equal(&p, val.str(&p)?, h, "the requested password hash")?,
                    None => {
                        return Err(format!(
                            "{p} sets a password but the request gives user {} none",
                            show(name)
                        ))
                    }
                }
            }
            "ssh_authorized_keys" => same_set(
                &p,
                val.strs(&p)?.into_iter().map(str::trim).collect(),
                want.ssh_authorized_keys.iter().map(|k| k.trim()),
            )?,
            other => {
                return Err(format!(
                    "{path}: the key {} is not accepted; a user may have only name, groups, shell, sudo, lock_passwd, passwd (or hashed_passwd) and ssh_authorized_keys, as requested",
                    show(other)
                ))
            }
        }
    }
    if unlocked && !hash_given {
        return Err(format!(
            "{path}.lock_passwd is false but no requested password hash is set"
        ));
    }
    for (key, asked) in [
        ("groups", !want.groups.is_empty()),
        ("shell", want.shell.is_some()),
        ("sudo", want.sudo),
        ("ssh_authorized_keys", !want.ssh_authorized_keys.is_empty()),
    ] {
        if asked && !seen.contains(key) {
            return Err(format!("{path} lacks {key}, which the request asks for"));
        }
    }
    if want.password_hash.is_some() && !hash_given {
        return Err(format!("{path} lacks the requested password hash (passwd)"));
    }
    Ok(name)
}

/// `sudo`: rules only when the request grants sudo; each on one line (a
/// line break would add a rule for another user to sudoers).
fn sudo(path: &str, v: &Node, granted: bool) -> Result<(), String> {
    if !granted {
        return match v {
            Node::Bool(false) => Ok(()),
            _ => Err(format!(
                "{path} grants sudo, which the request does not ask for"
            )),
        };
    }
    let rules = match v {
        Node::Str(s) => vec![s.as_str()],
        n => n.strs(path)?,
    };
    if rules.is_empty() {
        return Err(format!("{path} is an empty list; the request grants sudo"));
    }
    for r in rules {
        if r.trim().is_empty() || r.len() > MAX_SUDO_RULE || r.chars().any(char::is_control) {
            return Err(format!(
                "{path}: the rule {} must be 1 to {MAX_SUDO_RULE} characters on one line",
                show(r)
            ));
        }
    }
    Ok(())
}
