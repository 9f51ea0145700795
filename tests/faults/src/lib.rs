//! Test support only (a dev-dependency, never shipped): faults injected
//! from outside the code under test, shared by the integration tests of
//! several crates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A FUSE pass-through mount (`bindfs`) of a directory, whose daemon a test
/// can stop (`SIGSTOP`) to make every file under it hang as on a dead disk:
/// what the page cache holds is still read, but writes, flushes and new
/// reads get no answer, while the host and its processes stay alive.
/// Dropping it lets the daemon go on, unmounts (lazily), and ends the
/// daemon by its own pid.
pub struct HungMount {
    mountpoint: PathBuf,
    ns_pid: Option<u32>,
    bindfs: Child,
}

impl HungMount {
    /// Mounts `backing` on `mountpoint` (both existing directories), in the
    /// mount namespace of process `ns_pid` (`None`: this process's). Panics
    /// (the test fails) when bindfs is missing or the mount does not appear
    /// within 10 s.
    pub fn mount(ns_pid: Option<u32>, backing: &Path, mountpoint: &Path) -> HungMount {
        // nsenter execs bindfs (a mount namespace only): the child's pid is
        // bindfs's own.
        let bindfs = in_ns(ns_pid, "bindfs")
            .arg("-f")
            .arg(backing)
            .arg(mountpoint)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("bindfs (a FUSE pass-through; scripts/setup.sh installs it): {e}")
            });
        let mount = HungMount {
            mountpoint: mountpoint.to_path_buf(),
            ns_pid,
            bindfs,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mount.mounted() {
            assert!(
                Instant::now() < deadline,
                "bindfs did not mount {} within 10 s",
                mountpoint.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn mounted(&self) -> bool {
        let mountinfo = match self.ns_pid {
            Some(pid) => format!("/proc/{pid}/mountinfo"),
            None => "/proc/self/mountinfo".to_string(),
        };
        let want = self.mountpoint.to_string_lossy();
        std::fs::read_to_string(mountinfo)
            .is_ok_and(|t| t.lines().any(|l| l.split(' ').nth(4) == Some(&*want)))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) of the bindfs this guard started, by its own pid
        // (a child not waited for yet, so the pid is still ours).
        unsafe {
            libc::kill(self.bindfs.id() as i32, sig);
        }
    }

    /// Every access under the mount hangs from now on.
    pub fn hang(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Accesses are answered again (those that hung go on).
    pub fn answer(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        self.answer();
        let _ = in_ns(self.ns_pid, "umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = self.bindfs.kill();
        let _ = self.bindfs.wait();
    }
}

/// `program`, run in the mount namespace of `ns_pid` (if any).
fn in_ns(ns_pid: Option<u32>, program: &str) -> Command {
    match ns_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-m", "--", program]);
            c
        }
        None => Command::new(program),
    }
}
