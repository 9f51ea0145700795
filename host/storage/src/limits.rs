//! Running a tool on untrusted input under resource limits.
//!
//! A hostile image can make `qemu-img` spin (a qcow2 whose L1 entries all
//! point at one L2 table makes `check` walk billions of entries) or allocate
//! without bound. As OpenStack does with `prlimit`, every `qemu-img` (and
//! every other tool the storage layer runs) gets, in the child before `exec`:
//! - `RLIMIT_AS` (address space; 1 GiB by default);
//! - `RLIMIT_CPU` where the work is bounded (30 s for `info` and `check`,
//!   more for `convert`, in proportion to the image's size);
//! - `RLIMIT_CORE` 0 (a limit hit dumps no core);
//! - umask 077, so that every file it creates (a volume, a converted image,
//!   a seed) is private from its first byte;
//! - `MALLOC_ARENA_MAX=2` in its environment (see [`command`]).
//!
//! `info` and `check` also have a wall-clock bound. A hit of any limit is a
//! [`StorageError::Limit`] naming the limit, not a generic failure.

use crate::error::StorageError;
use nasvisor_best_effort::BestEffort;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The limits a tool runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds of an inspection (`qemu-img info`, `check`); a conversion
    /// gets this plus one second per [`Limits::convert_bytes_per_cpu_second`].
    pub cpu_secs: u64,
    /// Address space, bytes.
    pub memory_bytes: u64,
    /// Wall-clock bound of an inspection.
    pub wall: Duration,
    /// The slowest conversion rate allowed, bytes of virtual size per CPU
    /// second (a real conversion is 10 to 100 times faster).
    pub convert_bytes_per_cpu_second: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_secs: 30,
            memory_bytes: 1 << 30,
            wall: Duration::from_secs(120),
            convert_bytes_per_cpu_second: 32 << 20,
        }
    }
}

impl Limits {
    /// The CPU limit of converting an image of `virtual_size` bytes.
    pub fn convert_cpu_secs(&self, virtual_size: u64) -> u64 {
        self.cpu_secs
            .saturating_add(virtual_size / self.convert_bytes_per_cpu_second.max(1))
    }
}

/// Bytes of a tool's stderr kept for its error message (the rest is read
/// and dropped: a damaged image can make `qemu-img check` print gigabytes).
const STDERR_KEEP: usize = 16 << 10;
/// Largest stdout read from an inspection (JSON of `info` or `check`).
const STDOUT_KEEP: u64 = 64 << 20;

/// A command for `bin` whose child runs under `memory` bytes of address
/// space, `cpu` seconds of CPU time (when given), no core dumps and umask 077.
pub(crate) fn command(bin: &Path, memory: u64, cpu: Option<u64>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null());
    // glibc reserves 64 MiB of address space per malloc arena, one per
    // thread: qemu-img convert's I/O threads then need 1.3 GiB of address
    // space for 200 MiB of use. Two arenas keep it under 200 MiB, so the
    // address-space limit bounds what the image makes it allocate.
    cmd.env("MALLOC_ARENA_MAX", "2");
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes only the raw
    // setrlimit(2) and umask(2) system calls (rustix, no allocation, no
    // locks) on values copied in before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::process::{setrlimit, Resource, Rlimit};
            let fixed = |v: u64| Rlimit {
                current: Some(v),
                maximum: Some(v),
            };
            setrlimit(Resource::As, fixed(memory))?;
            setrlimit(Resource::Core, fixed(0))?;
            if let Some(c) = cpu {
                // SIGXCPU at the soft limit, SIGKILL a second later if the
                // tool ignores it.
                setrlimit(
                    Resource::Cpu,
                    Rlimit {
                        current: Some(c),
                        maximum: Some(c + 1),
                    },
                )?;
            }
            rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
    cmd
}

/// What a finished tool left.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The wall-clock bound it ran past and was killed at.
    pub timed_out: Option<Duration>,
}

/// Drains `r` on a thread, keeping the first `keep` bytes.
fn drain(mut r: impl Read + Send + 'static, keep: u64) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        // A read error only ends what is kept of the child's output early;
        // the child's own outcome is judged by its exit status.
        let _ = (&mut r).take(keep).read_to_end(&mut kept);
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        kept
    })
}

/// Collects a started child's stderr (bounded) on a thread.
pub(crate) fn stderr_of(child: &mut Child) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    child.stderr.take().map(|e| drain(e, STDERR_KEEP as u64))
}

/// The text a [`stderr_of`] thread collected.
pub(crate) fn joined(h: Option<std::thread::JoinHandle<Vec<u8>>>) -> String {
    h.and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default()
}

/// Runs `cmd` to its end, or kills it (by its own pid) after `wall`.
pub(crate) fn run(mut cmd: Command, wall: Duration) -> std::io::Result<Finished> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let out = child.stdout.take().map(|o| drain(o, STDOUT_KEEP));
    let err = stderr_of(&mut child);
    let deadline = Instant::now() + wall;
    let mut timed_out = None;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            timed_out = Some(wall);
            child
                .kill()
                .best_effort("kill a child past its wall-time limit");
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Finished {
        status,
        stdout: out.and_then(|h| h.join().ok()).unwrap_or_default(),
        stderr: joined(err),
        timed_out,
    })
}

/// Which limit, if any, ended a tool: its name and value, for
/// [`StorageError::Limit`]. `timed_out`: the wall-clock bound it was killed
/// at; `cpu`: the CPU limit it ran under, if any.
pub(crate) fn limit_hit(
    status: ExitStatus,
    stderr: &str,
    timed_out: Option<Duration>,
    memory_bytes: u64,
    cpu: Option<u64>,
) -> Option<(&'static str, String)> {
    if let Some(wall) = timed_out {
        return Some(("time", format!("{} s", wall.as_secs())));
    }
    let sig = status.signal();
    if let Some(c) = cpu {
        if sig == Some(rustix::process::Signal::XCPU.as_raw())
            || sig == Some(rustix::process::Signal::KILL.as_raw())
        {
            return Some(("CPU time", format!("{c} s")));
        }
    }
    let lower = stderr.to_ascii_lowercase();
    if !status.success()
        && (lower.contains("cannot allocate memory")
            || lower.contains("could not allocate")
            || lower.contains("failed to allocate")
            || lower.contains("out of memory")
            // No room left for a thread's stack.
            || lower.contains("qemu_thread_create"))
    {
        return Some(("memory", format!("{} MiB", memory_bytes >> 20)));
    }
    None
}

/// The error of a tool that hit a limit on `path`.
pub(crate) fn limit_error(
    path: &Path,
    op: &'static str,
    (limit, value): (&'static str, String),
) -> StorageError {
    tracing::warn!(path = %path.display(), op, limit, %value, "qemu-img hit a resource limit");
    StorageError::Limit {
        path: path.to_path_buf(),
        op,
        limit,
        value,
    }
}
