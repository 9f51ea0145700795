//! The service manager's side (sd_notify, `Type=notify`): nasvisord says
//! when it serves (`READY=1`), what it is doing (`STATUS=`), when it stops
//! (`STOPPING=1`), and, when the unit sets `WatchdogSec=`, that it is
//! still alive (`WATCHDOG=1`), so that a hung daemon is restarted by
//! systemd instead of sitting there (docs/appliance.md, "Watchdogs").
//!
//! Nothing is sent when `NOTIFY_SOCKET` is not set (a daemon started by
//! hand or by a test). The environment is left as it is: a restart into a
//! service release execs with it, and that release notifies the same unit.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;

/// The watchdog timeout the service manager set for process `pid`, as
/// sd_watchdog_enabled(3) reads it: `WATCHDOG_USEC`, unless
/// `WATCHDOG_PID` names another process (systemd sets both; a child that
/// inherited them is not watched).
fn watchdog_of(usec: Option<String>, for_pid: Option<String>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match for_pid {
        Some(p) if p.trim().parse::<u32>().ok() != Some(pid) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// What nasvisord tells systemd.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// Whether there is a service manager to tell.
    enabled: bool,
    /// The unit's `WatchdogSec=`, when it watches this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier of this process's environment.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let var = |k: &str| std::env::var(k).ok();
        Notifier {
            enabled,
            watchdog: enabled
                .then(|| {
                    watchdog_of(
                        var("WATCHDOG_USEC"),
                        var("WATCHDOG_PID"),
                        std::process::id(),
                    )
                })
                .flatten(),
        }
    }

    /// The unit's watchdog timeout, when systemd watches this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    /// The daemon serves: systemd counts the unit as started.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// What the daemon is doing (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The daemon stops (its VMs keep running).
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Gives the next notifier (a service release this process execs into:
    /// it stops serving, verifies and unpacks the release, loads its
    /// plugins) up to `gap` before its first keep-alive. The release sets
    /// the unit's own timeout again once it serves ([`Notifier::keep_alive`]).
    pub fn allow_gap(&self, gap: Duration) {
        if let Some(w) = self.watchdog {
            let usec = gap.max(w).as_micros().to_string();
            self.send(&[
                NotifyState::Custom(&format!("WATCHDOG_USEC={usec}")),
                NotifyState::Watchdog,
            ]);
        }
    }

    /// Feeds systemd's watchdog every half timeout, as long as `alive`
    /// answers Ok within a quarter of it (it is given the half timeout: no
    /// piece of the daemon's work it watches may take longer): a daemon
    /// whose runtime or store no longer answers stops feeding it, and
    /// systemd restarts it (its VMs keep running). Before `core` is set (the daemon is starting),
    /// the runtime answering is enough: the start has `TimeoutStartSec=`.
    /// Nothing runs when systemd does not watch this process.
    pub fn keep_alive<C, F, Fut>(&self, core: Arc<OnceLock<C>>, alive: F)
    where
        C: Send + Sync + 'static,
        F: Fn(&C, Duration) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let Some(timeout) = self.watchdog else {
            return;
        };
        let me = *self;
        // A gap a release's start was allowed ends with the release's own
        // timeout.
        me.send(&[NotifyState::Custom(&format!(
            "WATCHDOG_USEC={}",
            timeout.as_micros()
        ))]);
        let every = timeout / 2;
        let limit = timeout / 4;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let answer = match core.get() {
                    None => Ok(()),
                    Some(c) => match tokio::time::timeout(limit, alive(c, every)).await {
                        Ok(r) => r,
                        Err(_) => Err(format!(
                            "the daemon's own check did not answer within {} ms",
                            limit.as_millis()
                        )),
                    },
                };
                match answer {
                    Ok(()) => {
                        if failing {
                            tracing::info!("the daemon answers its own check again");
                            failing = false;
                        }
                        me.send(&[NotifyState::Watchdog]);
                    }
                    Err(reason) => {
                        tracing::error!(%reason, timeout_s = timeout.as_secs(), "not feeding systemd's watchdog: the daemon is restarted if this lasts");
                        failing = true;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::watchdog_of;
    use std::time::Duration;

    #[test]
    fn the_watchdog_is_this_processs_unless_it_names_another() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            watchdog_of(s("90000000"), s("42"), 42),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            watchdog_of(s("2000000"), None, 42),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_of(s("90000000"), s("43"), 42), None);
        assert_eq!(watchdog_of(s("0"), None, 42), None);
        assert_eq!(watchdog_of(s("soon"), None, 42), None);
        assert_eq!(watchdog_of(None, s("42"), 42), None);
    }
}
