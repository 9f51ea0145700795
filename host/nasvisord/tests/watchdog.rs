//! `nasvisord watchdog`, the process the daemon starts to guard its HA
//! QEMUs (a `sleep` child stands for one here), found again by a
//! restarted daemon, and stopped by its pid.

use nasvisor_watchdog::{ensure_running, monotonic_ms, Guard, Lease, LeaseFile};
use rustix::process::{kill_process, Pid, Signal};
use std::path::Path;
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    kill_process(pid, sig).expect("kill");
}

/// SIGKILL by pid (a process this test started) on drop.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            signal(self.0, Signal::KILL);
        }
    }
}

#[test]
fn the_watchdog_kills_a_lapsed_leases_guest_and_is_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let lease = LeaseFile::new(dir.path().join("lease.json"));
    let mut guest = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let _g = KillOnDrop(guest.id());
    let expires_at_ms = monotonic_ms() + 500;
    lease
        .write(&Lease {
            expires_at_ms,
            guests: vec![Guard::of("web", guest.id()).unwrap()],
        })
        .unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_nasvisord"));
    let log = dir.path().join("watchdog.log");
    let pid = ensure_running(exe, &lease, &log).unwrap();
    let _w = KillOnDrop(pid);
    assert_eq!(
        ensure_running(exe, &lease, &log).unwrap(),
        pid,
        "a second start finds the running watchdog"
    );

    let t = Instant::now();
    let status = loop {
        if let Some(s) = guest.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the guest still runs; the watchdog's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        monotonic_ms() > expires_at_ms,
        "killed before the lease lapsed"
    );
    assert!(!status.success(), "killed: {status:?}");
    // The report follows the kill.
    let fired = loop {
        if let Some(f) = lease.fired().unwrap() {
            break f;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no report");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(fired.killed.len(), 1);
    assert_eq!(fired.killed[0].vm, "web");
    assert_eq!(
        ensure_running(exe, &lease, &log).unwrap(),
        pid,
        "after firing, the same watchdog still runs"
    );

    // SIGTERM ends it cleanly.
    assert!(alive(pid));
    signal(pid, Signal::TERM);
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the watchdog ignores SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the HA watchdog stops") && text.contains("SIGTERM"),
        "no clean stop in the log:\n{text}"
    );
}
