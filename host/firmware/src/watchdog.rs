//! The board's hardware watchdog timers, as the kernel shows them
//! (`/sys/class/watchdog/watchdogN`): on the appliance systemd keeps the
//! first one fed (`RuntimeWatchdogSec=`), so that a hung kernel or init
//! resets the box, which then boots a good slot (docs/appliance.md,
//! "Watchdogs").

use std::path::Path;

/// Where the kernel lists the watchdog timers.
pub const WATCHDOG_CLASS: &str = "/sys/class/watchdog";

/// One hardware watchdog timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareWatchdog {
    /// Its device (`/dev/watchdog0`).
    pub device: String,
    /// Its driver's name for it (`i6300ESB timer`), when the kernel says.
    pub identity: Option<String>,
    /// `active` while something keeps it armed (systemd), `inactive`
    /// otherwise, when the kernel says.
    pub state: Option<String>,
    /// The time it waits for a keep-alive before it resets the board, s.
    pub timeout_s: Option<u64>,
}

/// The timers under `class` (see [`WATCHDOG_CLASS`]), by name; none when
/// the directory cannot be read (no watchdog driver, no sysfs).
pub fn hardware_watchdogs(class: &Path) -> Vec<HardwareWatchdog> {
    let Ok(dir) = std::fs::read_dir(class) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("watchdog"))
        .collect();
    names.sort_by_key(|n| {
        (
            n.trim_start_matches("watchdog")
                .parse::<u32>()
                .unwrap_or(u32::MAX),
            n.clone(),
        )
    });
    names
        .into_iter()
        .map(|name| {
            let read = |f: &str| {
                std::fs::read_to_string(class.join(&name).join(f))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            HardwareWatchdog {
                device: format!("/dev/{name}"),
                identity: read("identity"),
                state: read("state"),
                timeout_s: read("timeout").and_then(|t| t.parse().ok()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timers_are_read_by_number_with_what_the_kernel_says_of_them() {
        let d = tempfile::tempdir().unwrap();
        for (name, files) in [
            (
                "watchdog10",
                &[("identity", "softdog\n"), ("state", "inactive\n")][..],
            ),
            (
                "watchdog0",
                &[
                    ("identity", "i6300ESB timer\n"),
                    ("state", "active\n"),
                    ("timeout", "60\n"),
                ][..],
            ),
            ("watchdog2", &[("timeout", "not a number")][..]),
        ] {
            let p = d.path().join(name);
            std::fs::create_dir(&p).unwrap();
            for (f, v) in files {
                std::fs::write(p.join(f), v).unwrap();
            }
        }
        std::fs::create_dir(d.path().join("other")).unwrap();
        let w = hardware_watchdogs(d.path());
        let devices: Vec<&str> = w.iter().map(|w| w.device.as_str()).collect();
        assert_eq!(
            devices,
            ["/dev/watchdog0", "/dev/watchdog2", "/dev/watchdog10"]
        );
        assert_eq!(
            w[0],
            HardwareWatchdog {
                device: "/dev/watchdog0".into(),
                identity: Some("i6300ESB timer".into()),
                state: Some("active".into()),
                timeout_s: Some(60),
            }
        );
        assert_eq!(w[1].timeout_s, None);
        assert_eq!(w[1].identity, None);
        assert_eq!(w[2].state.as_deref(), Some("inactive"));
        assert!(hardware_watchdogs(&d.path().join("absent")).is_empty());
    }
}
