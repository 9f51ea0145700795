//! This host's site settings (`/api/v1/host/settings`; docs/appliance.md,
//! "Site settings"): the file that overrides the image's settings, read,
//! replaced and removed through the API. The daemon hands the core the
//! file's path, the check its next start would make of a text, and what
//! it made of the file at this start ([`SiteSettings`]); the core never
//! parses the daemon's configuration itself.
//!
//! A change is on trial ([`SiteTrial`]) until a daemon started with it
//! serves: settings that parse but keep nasvisord from starting (an
//! address already taken, a certificate that is not there) are put back
//! to the last ones a daemon started with, at the next start.

use crate::errors;
use crate::model::Severity;
use crate::Inner;
use nasvisor_api_types::{CoreError, HostSettingsView, SiteSettingsState};
use std::path::PathBuf;
use std::sync::Arc;

/// The check of a site settings text: the dotted keys it sets, or why the
/// daemon's next start would ignore it (naming the file and the key).
pub type SettingsCheck = Arc<dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync>;

/// The trial of a site settings change, kept beside the file (on the
/// data partition): `<file>.trial` counts the starts made with it,
/// `<file>.previous` holds the last settings a daemon started with
/// (`<file>.previous-absent`: there were none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteTrial {
    path: PathBuf,
}

/// What [`SiteTrial::start`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialStart {
    /// No change on trial.
    None,
    /// This is the first start with the change.
    OnTrial,
    /// A start with the change did not get to serve: the previous settings
    /// are back (the reason, in words).
    RolledBack(String),
}

impl SiteTrial {
    /// The trial of the site settings file `path`.
    pub fn new(path: impl Into<PathBuf>) -> SiteTrial {
        SiteTrial { path: path.into() }
    }

    fn side(&self, ext: &str) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    }

    /// Replaces the file with `text` (`None`: removes it), on trial. The
    /// settings to go back to are the last ones a daemon started with: a
    /// second change before any start keeps them.
    pub fn stage(&self, text: Option<&str>) -> std::io::Result<()> {
        let trial = self.side(".trial");
        if !trial.exists() {
            let (prev, absent) = (self.side(".previous"), self.side(".previous-absent"));
            match std::fs::read(&self.path) {
                Ok(old) => {
                    nasvisor_firmware::write_atomic(&prev, &old)?;
                    remove_if_there(&absent)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    nasvisor_firmware::write_atomic(&absent, b"")?;
                    remove_if_there(&prev)?;
                }
                Err(e) => return Err(e),
            }
            nasvisor_firmware::write_atomic(&trial, b"0\n")?;
        }
        match text {
            Some(t) => nasvisor_firmware::write_atomic(&self.path, t.as_bytes()),
            None => remove_if_there(&self.path),
        }
    }

    /// At the start of a daemon that is going to serve, before it reads
    /// the file: counts this start, or, when a start with the change
    /// already failed to serve, puts the previous settings back.
    pub fn start(&self) -> std::io::Result<TrialStart> {
        let trial = self.side(".trial");
        let starts: u32 = match std::fs::read_to_string(&trial) {
            Ok(t) => t.trim().parse().unwrap_or(1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrialStart::None),
            Err(e) => return Err(e),
        };
        if starts == 0 {
            nasvisor_firmware::write_atomic(&trial, b"1\n")?;
            return Ok(TrialStart::OnTrial);
        }
        let (prev, absent) = (self.side(".previous"), self.side(".previous-absent"));
        let back = if absent.exists() {
            remove_if_there(&self.path)?;
            "none (the image's settings alone)"
        } else {
            match std::fs::read(&prev) {
                Ok(old) => {
                    nasvisor_firmware::write_atomic(&self.path, &old)?;
                    "the previous ones"
                }
                // Nothing recorded to go back to: keep the file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return self.confirm().map(|()| TrialStart::None)
                }
                Err(e) => return Err(e),
            }
        };
        self.confirm()?;
        Ok(TrialStart::RolledBack(format!(
            "a start with the site settings changed last did not get to serve; {} put back \
             to {back}",
            self.path.display()
        )))
    }

    /// A daemon started with the file serves: the change is good.
    pub fn confirm(&self) -> std::io::Result<()> {
        remove_if_there(&self.side(".previous"))?;
        remove_if_there(&self.side(".previous-absent"))?;
        remove_if_there(&self.side(".trial"))
    }
}

/// Puts `text` in place of the file (`None`: removes it), on trial.
async fn stage(site: &SiteSettings, text: Option<String>) -> Result<(), CoreError> {
    let trial = SiteTrial::new(&site.path);
    tokio::task::spawn_blocking(move || trial.stage(text.as_deref()))
        .await
        .map_err(errors::internal)?
        .map_err(|e| {
            errors::internal(format!(
                "cannot change the site settings {}: {e}",
                site.path.display()
            ))
        })
}

fn remove_if_there(p: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What the daemon made of its site settings file at this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAtStart {
    pub state: SiteSettingsState,
    /// The keys it applied.
    pub keys: Vec<String>,
    /// Why it ignored the file.
    pub reason: Option<String>,
    /// The text it read (`None`: no file, or not readable).
    pub text: Option<String>,
    /// Why the settings changed last were put back at this start.
    pub rolled_back: Option<String>,
}

/// This host's site settings file, as the daemon hands it to the core.
#[derive(Clone)]
pub struct SiteSettings {
    /// The file (`site-config`).
    pub path: PathBuf,
    /// How the next start would judge a text.
    pub check: SettingsCheck,
    /// What this start made of it.
    pub at_start: SiteAtStart,
}

impl std::fmt::Debug for SiteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteSettings")
            .field("path", &self.path)
            .field("at_start", &self.at_start)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn site(&self) -> Result<&SiteSettings, CoreError> {
        self.cfg.site_settings.as_ref().ok_or_else(|| {
            errors::conflict(format!(
                "host {} has no site settings file: its configuration names none (site-config)",
                self.host.id
            ))
        })
    }

    /// At start: says so in an event when the site settings changed last
    /// were put back because a start with them never got to serve.
    pub(crate) async fn report_settings_rollback(&self) {
        let Some(why) = self
            .cfg
            .site_settings
            .as_ref()
            .and_then(|s| s.at_start.rolled_back.clone())
        else {
            return;
        };
        self.event(
            "host-settings-rolled-back",
            Severity::Warning,
            Some(format!("host/{}", self.host.id)),
            format!("host {}: {why}", self.host.id),
        )
        .await;
    }

    /// `GET /api/v1/host/settings`.
    pub(crate) async fn host_settings(&self) -> Result<HostSettingsView, CoreError> {
        let Some(site) = self.cfg.site_settings.clone() else {
            return Ok(HostSettingsView {
                host: self.host.id.clone(),
                path: None,
                text: None,
                keys: Vec::new(),
                error: None,
                running: SiteSettingsState::None,
                running_keys: Vec::new(),
                running_reason: None,
                rolled_back: None,
                restart_needed: false,
                restarting: false,
            });
        };
        let path = site.path.clone();
        let text = match tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
            .await
            .map_err(errors::internal)?
        {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(errors::internal(format!(
                    "cannot read the site settings {}: {e}",
                    site.path.display()
                )))
            }
        };
        let (keys, error) = match &text {
            None => (Vec::new(), None),
            Some(t) => match (site.check)(t) {
                Ok(k) => (k, None),
                Err(e) => (Vec::new(), Some(e)),
            },
        };
        Ok(HostSettingsView {
            host: self.host.id.clone(),
            path: Some(site.path.display().to_string()),
            restart_needed: text != site.at_start.text,
            text,
            keys,
            error,
            running: site.at_start.state,
            running_keys: site.at_start.keys.clone(),
            running_reason: site.at_start.reason.clone(),
            rolled_back: site.at_start.rolled_back.clone(),
            restarting: false,
        })
    }

    /// `PUT /api/v1/host/settings`: `text` replaces the file once the check
    /// passed; a text that would be ignored leaves the file as it was.
    pub(crate) async fn replace_host_settings(
        self: &Arc<Self>,
        text: String,
        restart: bool,
    ) -> Result<HostSettingsView, CoreError> {
        let site = self.site()?.clone();
        let keys = (site.check)(&text).map_err(|e| errors::invalid("text", e))?;
        stage(&site, Some(text)).await?;
        let what = if keys.is_empty() {
            "no keys".to_string()
        } else {
            keys.join(", ")
        };
        self.settings_changed(format!("site settings replaced ({what})"), restart)
            .await
    }

    /// `DELETE /api/v1/host/settings`.
    pub(crate) async fn clear_host_settings(
        self: &Arc<Self>,
        restart: bool,
    ) -> Result<HostSettingsView, CoreError> {
        let site = self.site()?.clone();
        stage(&site, None).await?;
        self.settings_changed("site settings removed".into(), restart)
            .await
    }

    /// Records the change, restarts the daemon when asked to and the file
    /// is not what it read at its start, and answers with the settings.
    async fn settings_changed(
        self: &Arc<Self>,
        what: String,
        restart: bool,
    ) -> Result<HostSettingsView, CoreError> {
        let mut view = self.host_settings().await?;
        let restarting = restart && view.restart_needed;
        let then = if restarting {
            "nasvisord restarts to apply them; its VMs keep running"
        } else if view.restart_needed {
            "they take effect at the next start of nasvisord"
        } else {
            "the running nasvisord already runs with them"
        };
        self.event(
            "host-settings-changed",
            Severity::Info,
            Some(format!("host/{}", self.host.id)),
            format!("host {}: {what}; {then}", self.host.id),
        )
        .await;
        if restarting {
            let me = self.clone();
            tokio::spawn(async move {
                // A moment for the answer to reach the caller before the
                // endpoint goes away for the restart.
                tokio::time::sleep(crate::firmware::RESTART_GRACE).await;
                me.service_restart.notify_one();
            });
        }
        view.restarting = restarting;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::{SiteTrial, TrialStart};

    #[test]
    fn a_change_that_never_served_is_put_back_at_the_next_start() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("site.toml");
        let trial = SiteTrial::new(&path);
        let read = || std::fs::read_to_string(&path).ok();
        // No file, then one: on trial until a start serves.
        assert_eq!(trial.start().unwrap(), TrialStart::None);
        trial.stage(Some("a = 1\n")).unwrap();
        assert_eq!(read().as_deref(), Some("a = 1\n"));
        assert_eq!(trial.start().unwrap(), TrialStart::OnTrial);
        trial.confirm().unwrap();
        assert_eq!(trial.start().unwrap(), TrialStart::None);
        // Two changes before a start: back to the one that served.
        trial.stage(Some("a = 2\n")).unwrap();
        trial.stage(Some("a = 3\n")).unwrap();
        assert_eq!(trial.start().unwrap(), TrialStart::OnTrial);
        // That start never served: the next one puts a = 1 back.
        let TrialStart::RolledBack(why) = trial.start().unwrap() else {
            panic!("not rolled back");
        };
        assert!(
            why.contains("site.toml") && why.contains("previous"),
            "{why}"
        );
        assert_eq!(read().as_deref(), Some("a = 1\n"));
        assert_eq!(trial.start().unwrap(), TrialStart::None);
        // A removal that never served brings the file back; an addition
        // to no file goes back to none.
        trial.stage(None).unwrap();
        assert_eq!(read(), None);
        assert_eq!(trial.start().unwrap(), TrialStart::OnTrial);
        assert!(matches!(trial.start().unwrap(), TrialStart::RolledBack(_)));
        assert_eq!(read().as_deref(), Some("a = 1\n"));
        std::fs::remove_file(&path).unwrap();
        trial.stage(Some("b = 1\n")).unwrap();
        assert_eq!(trial.start().unwrap(), TrialStart::OnTrial);
        let TrialStart::RolledBack(why) = trial.start().unwrap() else {
            panic!("not rolled back");
        };
        assert!(why.contains("image's settings alone"), "{why}");
        assert_eq!(read(), None);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
