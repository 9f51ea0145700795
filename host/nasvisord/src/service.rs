//! Service releases in the daemon (docs/firmware.md, "Service releases"):
//! the launch at start (run the current release instead of this binary),
//! the restart into a release just staged, and the watchdog that rolls a
//! release back when it is not healthy in time.
//!
//! The process keeps its pid through a restart: nasvisord stops serving,
//! execs the launcher (the slot's nasvisord), which execs the release.
//! A supervisor (systemd) sees one process that kept running; so does a
//! test that started the daemon. The VMs, which outlive the daemon, are
//! found again by the new one.

use nasvisor_core::FirmwareSettings;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Set by the launcher: the release this process is.
pub const RELEASE_ENV: &str = "NASVISOR_SERVICE_RELEASE";
/// Set by the launcher: the release's unpacked directory.
pub const ROOT_ENV: &str = "NASVISOR_SERVICE_ROOT";
/// Set by the launcher: the launcher itself (the slot's nasvisord), which
/// a restart execs again.
pub const LAUNCHER_ENV: &str = "NASVISOR_SERVICE_LAUNCHER";

/// The service release this process is, when the launcher started one.
pub fn running_release() -> Option<String> {
    std::env::var(RELEASE_ENV).ok().filter(|v| !v.is_empty())
}

/// The release's plugins, when this process is a release carrying them.
pub fn release_plugins() -> Option<PathBuf> {
    let root = std::env::var_os(ROOT_ENV)?;
    let p = Path::new(&root).join(nasvisor_firmware::SERVICE_PLUGINS);
    p.is_dir().then_some(p)
}

/// At start, before anything else: when a service release newer than the
/// booted slot is current, exec it (this call then does not return).
/// Returns when this binary is the one to run: no release, this process
/// is the release, or the release could not be run (then rolled back when
/// it was on trial).
pub fn launch(settings: &FirmwareSettings) {
    if running_release().is_some() {
        return;
    }
    let launch = match settings.service_launch() {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the service release; running this nasvisord");
            return;
        }
    };
    let daemon = launch.daemon();
    tracing::info!(release = %launch.version, trial = launch.trial, daemon = %daemon.display(), "running the service release");
    let mut cmd = Command::new(&daemon);
    cmd.args(std::env::args_os().skip(1))
        .env(RELEASE_ENV, &launch.version)
        .env(ROOT_ENV, &launch.root);
    if let Ok(me) = std::env::current_exe() {
        cmd.env(LAUNCHER_ENV, me);
    }
    let err = cmd.exec();
    tracing::error!(release = %launch.version, daemon = %daemon.display(), error = %err, "cannot run the service release; running this nasvisord");
    if launch.trial {
        let reason = format!("cannot run {}: {err}", daemon.display());
        if let Err(e) = settings.service_rollback(&launch.version, &reason) {
            tracing::error!(error = %e, "cannot roll the service release back");
        }
    }
}

/// The launcher a restart execs: the one that started this release, or
/// this binary.
fn launcher() -> std::io::Result<PathBuf> {
    match std::env::var_os(LAUNCHER_ENV) {
        Some(l) => Ok(PathBuf::from(l)),
        None => std::env::current_exe(),
    }
}

/// After the daemon stopped serving because a release was staged: starts
/// the watchdog for the release on trial, then execs the launcher with
/// this process's arguments. Returns only when the exec failed.
pub fn restart(settings: &FirmwareSettings) -> std::io::Error {
    let launcher = match launcher() {
        Ok(l) => l,
        Err(e) => return e,
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match settings.service_trial() {
        Ok(Some(release)) => {
            if let Err(e) = spawn_watchdog(&launcher, &args, &release, settings.service_deadline) {
                tracing::error!(error = %e, "cannot start the service release's watchdog; it will not be rolled back by a deadline");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot read the service release on trial"),
    }
    tracing::info!(launcher = %launcher.display(), "restarting into the service release");
    Command::new(&launcher)
        .args(&args)
        .env_remove(RELEASE_ENV)
        .env_remove(ROOT_ENV)
        .env_remove(LAUNCHER_ENV)
        .exec()
}

/// Without firmware management: execs this binary again with this
/// process's arguments (new site settings applied at once). Returns only
/// when the exec failed.
pub fn reexec() -> std::io::Error {
    let me = match std::env::current_exe() {
        Ok(m) => m,
        Err(e) => return e,
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    tracing::info!(exe = %me.display(), "restarting in place");
    Command::new(&me).args(&args).exec()
}

/// Starts `nasvisord ... service-watch` for `release`, detached: it is
/// started through a first process that starts it and exits, so it is no
/// child of the daemon it watches. The watchdog is the launcher's (the
/// slot's own nasvisord, read-only), not the release's: the code that
/// judges a release is not the release's, and the release's unpacked
/// files are made private (not executable) once the daemon runs.
fn spawn_watchdog(
    launcher: &Path,
    args: &[OsString],
    release: &str,
    deadline: Duration,
) -> std::io::Result<()> {
    let supervised = std::env::var_os("INVOCATION_ID").is_some();
    let mut cmd = Command::new(launcher);
    cmd.args(args)
        .arg("service-watch")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--release")
        .arg(release)
        .arg("--deadline-s")
        .arg(deadline.as_secs().to_string())
        .arg("--launcher")
        .arg(launcher)
        .arg("--detach");
    if supervised {
        cmd.arg("--supervised");
    }
    cmd.arg("--").args(args);
    let status = cmd.status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "the watchdog's starter ended with {status}"
        )));
    }
    Ok(())
}

/// `nasvisord service-watch`'s options.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The daemon's pid.
    #[arg(long)]
    pid: u32,
    /// The release on trial.
    #[arg(long)]
    release: String,
    /// How long it has to become healthy, s.
    #[arg(long)]
    deadline_s: u64,
    /// The launcher to exec when the release is rolled back.
    #[arg(long)]
    launcher: PathBuf,
    /// Start the watchdog detached and return.
    #[arg(long)]
    detach: bool,
    /// A supervisor (systemd) restarts the daemon after a roll-back: the
    /// watchdog only kills the release.
    #[arg(long)]
    supervised: bool,
    /// The daemon's arguments, for the launcher.
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// `nasvisord service-watch`: waits until the release on trial is healthy
/// (its trial ends: done), its deadline passes, or its process dies; in
/// the last two cases it rolls the release back, kills it, and (without a
/// supervisor) execs the launcher in its place.
pub fn watch(settings: &FirmwareSettings, a: &WatchArgs) -> ExitCode {
    if a.detach {
        // The first process: start the real watchdog, without --detach,
        // and end; the daemon waits for this one only.
        let me = match std::env::current_exe() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("nasvisord service-watch: {e}");
                return ExitCode::FAILURE;
            }
        };
        let args: Vec<OsString> = std::env::args_os()
            .skip(1)
            .filter(|x| x != "--detach")
            .collect();
        return match Command::new(me).args(args).spawn() {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nasvisord service-watch: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let deadline = Duration::from_secs(a.deadline_s);
    let started = proc_start(a.pid);
    let t0 = Instant::now();
    tracing::info!(release = %a.release, pid = a.pid, deadline_s = a.deadline_s, "watching the service release on trial");
    let reason = loop {
        std::thread::sleep(Duration::from_millis(250));
        match settings.service_trial() {
            Ok(Some(v)) if v == a.release => {}
            Ok(_) => {
                tracing::info!(release = %a.release, "the service release's trial ended; the watchdog stops");
                return ExitCode::SUCCESS;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the service release on trial"),
        }
        if started.is_none() || proc_start(a.pid) != started {
            break "its nasvisord exited before it became healthy".to_string();
        }
        if t0.elapsed() >= deadline {
            break format!("it did not become healthy within {} s", a.deadline_s);
        }
    };
    let reason = format!("service release {}: {reason}", a.release);
    match settings.service_rollback(&a.release, &reason) {
        Ok(true) => {}
        Ok(false) => return ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot roll the service release back");
            return ExitCode::FAILURE;
        }
    }
    if started.is_some() && proc_start(a.pid) == started {
        tracing::warn!(pid = a.pid, "killing the unhealthy service release");
        if let Some(pid) = rustix::process::Pid::from_raw(a.pid as i32) {
            if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
                tracing::error!(pid = a.pid, error = %e, "cannot kill the unhealthy service release");
            }
        }
        let t = Instant::now();
        while proc_start(a.pid) == started && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if a.supervised {
        // systemd restarts nasvisord.service (Restart=on-failure); the
        // launcher runs the release rolled back to.
        return ExitCode::SUCCESS;
    }
    tracing::info!(launcher = %a.launcher.display(), "restarting nasvisord after the roll-back");
    let err = Command::new(&a.launcher)
        .args(&a.args)
        .env_remove(RELEASE_ENV)
        .env_remove(ROOT_ENV)
        .env_remove(LAUNCHER_ENV)
        .exec();
    tracing::error!(launcher = %a.launcher.display(), error = %err, "cannot restart nasvisord after the roll-back");
    ExitCode::FAILURE
}

/// A live process's start time (`/proc/<pid>/stat` field 22); `None` when
/// it is gone or a zombie. Comparing it tells the same process from
/// another that reused the pid.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields
    // after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (the state); field 22 is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::proc_start;

    #[test]
    fn a_live_process_has_a_start_time_and_a_gone_one_none() {
        assert!(proc_start(std::process::id()).is_some());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(proc_start(pid), None);
    }
}
