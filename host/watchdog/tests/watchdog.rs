//! The watchdog against real processes: `sleep` children stand for QEMUs
//! (killed by pid in a guard, also when a test fails).

use nasvisor_watchdog::{enforce_once, monotonic_ms, Guard, Lease, LeaseFile, WatchState};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process, killed and reaped on drop.
struct Proc(Child);

impl Proc {
    fn spawn(program: &Path) -> Proc {
        Proc(
            Command::new(program)
                .arg("1000")
                .spawn()
                .expect("the child starts"),
        )
    }

    fn sleep() -> Proc {
        Proc::spawn(Path::new("sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it still runs (reaps it once it ended).
    fn running(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }

    /// Waits up to 2 s for it to end.
    fn ended(&mut self) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lease_in(dir: &Path) -> LeaseFile {
    LeaseFile::new(dir.join("lease.json"))
}

#[test]
fn a_renewed_lease_kills_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = lease_in(dir.path());
    let mut p = Proc::sleep();
    let lease = Lease {
        expires_at_ms: monotonic_ms() + 60_000,
        guests: vec![Guard::of("web", p.pid()).unwrap()],
    };
    file.write(&lease).unwrap();
    let mut st = WatchState::default();
    assert_eq!(enforce_once(&file, &mut st).unwrap(), None);
    assert!(p.running());
    assert_eq!(file.fired().unwrap(), None);
    assert_eq!(file.read().unwrap(), Some(lease));
}

#[test]
fn a_lapsed_lease_kills_its_guests_once_and_spares_a_reused_pid() {
    let dir = tempfile::tempdir().unwrap();
    let file = lease_in(dir.path());
    let mut a = Proc::sleep();
    let mut b = Proc::sleep();
    let mut other = Proc::sleep();
    let ga = Guard::of("a", a.pid()).unwrap();
    let gb = Guard::of("b", b.pid()).unwrap();
    // `other`'s pid with another start time: a pid reused since.
    let mut reused = Guard::of("c", other.pid()).unwrap();
    reused.start_ticks += 1;
    file.write(&Lease {
        expires_at_ms: monotonic_ms().saturating_sub(1),
        guests: vec![ga.clone(), gb.clone(), reused],
    })
    .unwrap();
    let mut st = WatchState::default();
    let fired = enforce_once(&file, &mut st).unwrap().expect("it fired");
    assert_eq!(fired.killed, vec![ga.clone(), gb.clone()]);
    assert!(a.ended() && b.ended(), "the guests were killed");
    assert!(other.running(), "a reused pid is spared");
    let report = file.fired().unwrap().expect("a report");
    assert_eq!(report.killed, vec![ga, gb]);
    // Disarmed: it does not fire again.
    assert!(file.read().unwrap().unwrap().guests.is_empty());
    assert_eq!(enforce_once(&file, &mut st).unwrap(), None);
    file.clear_fired();
    assert_eq!(file.fired().unwrap(), None);
}

#[test]
fn a_corrupt_lease_file_keeps_the_last_good_lease_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = lease_in(dir.path());
    let mut p = Proc::sleep();
    file.write(&Lease {
        expires_at_ms: monotonic_ms() + 300,
        guests: vec![Guard::of("web", p.pid()).unwrap()],
    })
    .unwrap();
    let mut st = WatchState::default();
    assert_eq!(enforce_once(&file, &mut st).unwrap(), None);
    std::fs::write(file.path(), b"{not json").unwrap();
    assert!(file.read().is_err(), "the file is unreadable");
    std::thread::sleep(Duration::from_millis(400));
    let fired = enforce_once(&file, &mut st).unwrap().expect("it fired");
    assert_eq!(fired.killed.len(), 1);
    assert!(p.ended());
}

#[test]
fn a_removed_lease_file_keeps_the_last_lease_in_force_and_is_not_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = lease_in(dir.path());
    let mut p = Proc::sleep();
    let g = Guard::of("web", p.pid()).unwrap();
    file.write(&Lease {
        expires_at_ms: monotonic_ms() + 300,
        guests: vec![g.clone()],
    })
    .unwrap();
    let mut st = WatchState::default();
    assert_eq!(enforce_once(&file, &mut st).unwrap(), None);
    std::fs::remove_file(file.path()).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let fired = enforce_once(&file, &mut st).unwrap().expect("it fired");
    assert_eq!(fired.killed, vec![g.clone()]);
    assert!(p.ended());
    assert_eq!(file.read().unwrap(), None, "no lease written back");
    assert_eq!(file.fired().unwrap().unwrap().killed, vec![g]);
    assert_eq!(enforce_once(&file, &mut st).unwrap(), None, "fired once");
}

#[test]
fn a_guard_reads_the_start_time_of_a_process_named_with_spaces_and_parentheses() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a) b (c");
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep");
    // A link, not a copy: exec of a file just written can fail with
    // ETXTBSY while other test threads fork. The command name is the
    // link's.
    std::os::unix::fs::symlink(sleep, &odd).unwrap();
    let p = Proc::spawn(&odd);
    let g = Guard::of("odd", p.pid()).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid())).unwrap();
    assert_eq!(comm.trim(), "a) b (c", "the odd name is the one read");
    let plain = Proc::sleep();
    let h = Guard::of("plain", plain.pid()).unwrap();
    // Both started within this test: close in time, and read the same way.
    assert!(
        g.start_ticks > 0 && h.start_ticks >= g.start_ticks,
        "{g:?} {h:?}"
    );
    assert!(h.start_ticks - g.start_ticks < 1000, "{g:?} {h:?}");
    assert!(Guard::of("none", u32::MAX / 2).is_err());
}
