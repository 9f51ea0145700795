//! This host's site settings (`/api/v1/host/settings`; docs/appliance.md,
//! "Site settings"): the file that overrides the image's settings, read,
//! replaced and removed through the API. The daemon hands the core the
//! file's path, the check its next start would make of a text, and what
//! it made of the file at this start ([`SiteSettings`]); the core never
//! parses the daemon's configuration itself.

use crate::errors;
use crate::model::Severity;
use crate::Inner;
use nasvisor_api_types::{CoreError, HostSettingsView, SiteSettingsState};
use std::path::PathBuf;
use std::sync::Arc;

/// The check of a site settings text: the dotted keys it sets, or why the
/// daemon's next start would ignore it (naming the file and the key).
pub type SettingsCheck = Arc<dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync>;

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
        let path = site.path.clone();
        tokio::task::spawn_blocking(move || {
            nasvisor_firmware::write_atomic(&path, text.as_bytes())
        })
        .await
        .map_err(errors::internal)?
        .map_err(|e| {
            errors::internal(format!(
                "cannot write the site settings {}: {e}",
                site.path.display()
            ))
        })?;
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
        let path = site.path.clone();
        match tokio::task::spawn_blocking(move || std::fs::remove_file(&path))
            .await
            .map_err(errors::internal)?
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(errors::internal(format!(
                    "cannot remove the site settings {}: {e}",
                    site.path.display()
                )))
            }
        }
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
