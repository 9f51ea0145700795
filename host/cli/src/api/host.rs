//! `nasvisor host`: this host alone, or the cluster's hosts (list,
//! cordon, uncordon, degrade, undegrade, evacuate), the admin certificate
//! of the host talked to (`host certificate`), and a host's site settings
//! (`host settings`).

use super::client::{enc, CliResult, Client};
use super::jobs;
use super::render::{cell, Out, Render};
use super::table::{self, mib};
use clap::{Args, Subcommand};
use nasvisor_api_types::{
    CertificateReplace, CertificateView, HostDegrade, HostSettingsReplace, HostSettingsView,
    HostView, JobView, SiteSettingsState,
};

/// `nasvisor host`.
#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(subcommand)]
    cmd: Option<HostCmd>,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Every host of the cluster: online, cordoned, resources.
    List,
    /// Place no new VMs on a host.
    Cordon { host: String },
    /// Place VMs on a host again.
    Uncordon { host: String },
    /// Put a host into maintenance: its health becomes `maintenance` (an
    /// HA trigger) and no new VMs are placed on it.
    Degrade {
        host: String,
        /// Why (shown in the host's health reasons).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take a host out of maintenance.
    Undegrade { host: String },
    /// The admin certificate of the host the command talks to; with --cert
    /// and --key, replace it (served at once to new connections; clients
    /// that pinned the old fingerprint must pin the new one).
    Certificate {
        /// The new certificate chain, PEM (the server's own first).
        #[arg(long, requires = "key")]
        cert: Option<std::path::PathBuf>,
        /// Its private key, PEM.
        #[arg(long, requires = "cert")]
        key: Option<std::path::PathBuf>,
    },
    /// A host's site settings: the file (TOML, the daemon's configuration
    /// keys) that overrides the settings of its image; shown alone, set
    /// from a file, or cleared (docs/appliance.md, "Site settings").
    Settings {
        #[command(subcommand)]
        cmd: Option<SettingsCmd>,
        /// The host (as `host list` shows it); the one talked to when
        /// absent.
        #[arg(long, global = true)]
        host: Option<String>,
    },
    /// Cordon a host and live-migrate its running VMs away (a job).
    Evacuate {
        host: String,
        /// Follow the job until it ends.
        #[arg(long)]
        wait: bool,
    },
}

/// `nasvisor host settings ...`.
#[derive(Debug, Subcommand)]
pub enum SettingsCmd {
    /// The file, the keys it sets, and what the running daemon applied.
    Show,
    /// Replace the file with FILE, once the host checked it as its daemon's
    /// next start would (a file it would ignore is refused, naming the
    /// key, and the old one stays).
    Set {
        /// The new settings (TOML).
        file: std::path::PathBuf,
        /// Restart the daemon in place to apply them at once (its VMs keep
        /// running; the endpoint is away for a few seconds).
        #[arg(long)]
        restart: bool,
    },
    /// Remove the file: the image's settings alone from the next start.
    Clear {
        /// Restart the daemon in place to apply it at once.
        #[arg(long)]
        restart: bool,
    },
}

/// The settings route's path, with `?host=` and `restart=` when given.
fn settings_path(host: Option<&str>, restart: bool) -> String {
    let mut q: Vec<String> = Vec::new();
    if let Some(h) = host {
        q.push(format!("host={}", enc(h)));
    }
    if restart {
        q.push("restart=true".into());
    }
    let mut p = "/api/v1/host/settings".to_string();
    if !q.is_empty() {
        p.push('?');
        p.push_str(&q.join("&"));
    }
    p
}

/// The line after a change of the settings.
fn settings_changed(v: &HostSettingsView, what: &str) -> String {
    let then = if v.restarting {
        "nasvisord restarts to apply them (its VMs keep running)"
    } else if v.restart_needed {
        "they take effect at the next start of nasvisord (or use --restart)"
    } else {
        "the running nasvisord already runs with them"
    };
    format!("site settings of host {} {what}; {then}", v.host)
}

fn host_path(host: &str, op: &str) -> String {
    format!("/api/v1/hosts/{}/{op}", enc(host))
}

/// Runs `nasvisor host [...]`.
pub fn run(c: &Client, args: HostArgs, out: Out) -> CliResult<()> {
    match args.cmd {
        None => out.show(&c.get::<HostView>("/api/v1/host")?),
        Some(HostCmd::List) => out.list(&c.get::<Vec<HostView>>("/api/v1/hosts")?),
        Some(HostCmd::Certificate { cert, key }) => {
            const PATH: &str = "/api/v1/host/certificate";
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    let read = |p: &std::path::Path| {
                        std::fs::read_to_string(p).map_err(|e| {
                            super::client::CliError::msg(format!("{}: {e}", p.display()))
                        })
                    };
                    let body = CertificateReplace {
                        cert_pem: read(&cert)?,
                        key_pem: read(&key)?,
                    };
                    let v: CertificateView = c.send("PUT", PATH, &body)?;
                    out.done(&v, |v| {
                        format!(
                            "certificate replaced: {} (fingerprint {}); clients that pinned the \
                             old one need --fingerprint {} or --ca-cert of its CA",
                            v.subject, v.fingerprint, v.fingerprint
                        )
                    });
                }
                _ => out.show(&c.get::<CertificateView>(PATH)?),
            }
        }
        Some(HostCmd::Cordon { host }) => {
            let h: HostView = c.call("POST", &host_path(&host, "cordon"))?;
            out.done(&h, |_| {
                format!("host {host} cordoned: no new VMs are placed on it")
            });
        }
        Some(HostCmd::Uncordon { host }) => {
            let h: HostView = c.call("POST", &host_path(&host, "uncordon"))?;
            out.done(&h, |_| format!("host {host} uncordoned"));
        }
        Some(HostCmd::Degrade { host, reason }) => {
            let body = HostDegrade { reason };
            let h: HostView = c.send("POST", &host_path(&host, "degrade"), &body)?;
            out.done(&h, |h| {
                format!(
                    "host {host} is in maintenance: {}",
                    cell(&h.health_reasons.join("; "))
                )
            });
        }
        Some(HostCmd::Undegrade { host }) => {
            let h: HostView = c.call("POST", &host_path(&host, "undegrade"))?;
            out.done(&h, |h| {
                format!("host {host} out of maintenance: {}", cell(&h.health))
            });
        }
        Some(HostCmd::Settings { cmd, host }) => {
            let host = host.as_deref();
            match cmd.unwrap_or(SettingsCmd::Show) {
                SettingsCmd::Show => {
                    out.show(&c.get::<HostSettingsView>(&settings_path(host, false))?)
                }
                SettingsCmd::Set { file, restart } => {
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        super::client::CliError::msg(format!("{}: {e}", file.display()))
                    })?;
                    let body = HostSettingsReplace { text };
                    let v: HostSettingsView =
                        c.send("PUT", &settings_path(host, restart), &body)?;
                    out.done(&v, |v| {
                        let keys = if v.keys.is_empty() {
                            "no keys".to_string()
                        } else {
                            v.keys.join(", ")
                        };
                        settings_changed(v, &format!("replaced ({keys})"))
                    });
                }
                SettingsCmd::Clear { restart } => {
                    let v: HostSettingsView = c.call("DELETE", &settings_path(host, restart))?;
                    out.done(&v, |v| settings_changed(v, "removed"));
                }
            }
        }
        Some(HostCmd::Evacuate { host, wait }) => {
            let j: JobView = c.call("POST", &host_path(&host, "evacuate"))?;
            jobs::answer(c, out, &j, wait)?;
        }
    }
    Ok(())
}

impl Render for HostView {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "node",
        "address",
        "online",
        "cordoned",
        "health",
        "role",
        "vms",
        "cpus",
        "memory_mib",
        "free_mib",
        "version",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.id),
            cell(&self.node_id),
            cell(&self.address),
            cell(&self.online),
            cell(&self.cordoned),
            cell(&self.health),
            cell(&self.cluster_role),
            cell(&self.vms),
            cell(&self.cpus),
            cell(&self.memory_mib),
            cell(&self.free_memory_mib),
            cell(&self.version),
        ]
    }

    /// Identity, version, resources and accelerator.
    fn show(&self) -> String {
        let mut out = table::fields(&[
            ("id", cell(&self.id)),
            ("name", cell(&self.name)),
            ("version", cell(&self.version)),
            ("cluster role", cell(&self.cluster_role)),
            ("health", cell(&self.health)),
            ("reasons", cell(&self.health_reasons.join("; "))),
            ("cpus", cell(&self.cpus)),
        ]);
        out.push_str(&format!(
            "memory:         {} ({} free)\n",
            mib(self.memory_mib),
            mib(self.free_memory_mib)
        ));
        out.push_str(&format!(
            "accelerator:    {} ({})\n",
            cell(&self.accel),
            cell(&self.accel_reason)
        ));
        out.push_str(&format!("qemu:           {}\n", cell(&self.qemu_version)));
        out
    }
}

impl Render for CertificateView {
    const COLUMNS: &'static [&'static str] = &["subject", "issuer", "not after", "fingerprint"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.subject),
            cell(&self.issuer),
            cell(&self.not_after),
            cell(&self.fingerprint),
        ]
    }

    fn show(&self) -> String {
        table::fields(&[
            ("subject", cell(&self.subject)),
            ("issuer", cell(&self.issuer)),
            ("self-signed", cell(&self.self_signed)),
            (
                "valid",
                format!("{} .. {}", self.not_before, self.not_after),
            ),
            ("names", cell(&self.names)),
            ("chain", cell(&self.chain_length)),
            ("fingerprint", cell(&self.fingerprint)),
        ])
    }
}

impl Render for HostSettingsView {
    const COLUMNS: &'static [&'static str] = &["host", "path", "keys", "running", "restart_needed"];

    fn row(&self) -> Vec<String> {
        vec![
            cell(&self.host),
            cell(&self.path),
            cell(&self.keys),
            cell(&self.running),
            cell(&self.restart_needed),
        ]
    }

    /// The fields, then the file's text.
    fn show(&self) -> String {
        let list = |k: &[String]| {
            if k.is_empty() {
                "no keys".to_string()
            } else {
                k.join(", ")
            }
        };
        let running = match self.running {
            SiteSettingsState::None => "no site settings file is named (site-config)".into(),
            SiteSettingsState::Absent => "no file: the image's settings alone".into(),
            SiteSettingsState::Applied => format!("applied ({})", list(&self.running_keys)),
            SiteSettingsState::Ignored => {
                format!("IGNORED: {}", self.running_reason.as_deref().unwrap_or("-"))
            }
        };
        let now = match (&self.text, &self.error) {
            (None, _) => "no file".to_string(),
            (Some(_), Some(e)) => format!("would be IGNORED at the next start: {e}"),
            (Some(_), None) => list(&self.keys),
        };
        let mut fields = vec![
            ("host", cell(&self.host)),
            ("file", cell(&self.path)),
            ("keys", now),
            ("running", running),
            ("restart needed", cell(&self.restart_needed)),
        ];
        if let Some(why) = &self.rolled_back {
            fields.push(("put back", why.clone()));
        }
        let mut out = table::fields(&fields);
        if let Some(t) = &self.text {
            out.push('\n');
            out.push_str(t);
            if !t.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}
