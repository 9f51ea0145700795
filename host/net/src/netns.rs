//! Network namespaces: open a named namespace (as made by `ip netns add`)
//! and run a closure inside it on a dedicated, short-lived thread, so the
//! calling thread never changes namespace.
//!
//! Sockets and `/dev/net/tun` files opened inside the closure stay bound to
//! that namespace after the thread ends; that is how [`crate::Net`] talks to
//! a namespace.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::error::NetError;

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Longest namespace name accepted.
pub const MAX_NETNS_NAME: usize = 64;

/// Checks a namespace name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not
/// starting with `.` or `-` (so it can never leave [`NETNS_RUN_DIR`]).
pub fn check_netns_name(value: &str) -> Result<(), NetError> {
    let bad = |reason: &str| Err(NetError::invalid("netns", value, reason));
    if value.is_empty() {
        return bad("it is empty");
    }
    if value.len() > MAX_NETNS_NAME {
        return bad("it is longer than 64 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    if value.starts_with('.') || value.starts_with('-') {
        return bad("it must start with a letter or a digit");
    }
    Ok(())
}

/// An open handle on a named network namespace. Holding it keeps the
/// namespace alive even if `ip netns del` removes its name.
#[derive(Debug)]
pub struct Netns {
    name: String,
    fd: OwnedFd,
}

impl Netns {
    /// Opens `/var/run/netns/<name>`.
    pub fn open(name: &str) -> Result<Netns, NetError> {
        check_netns_name(name)?;
        let path = format!("{NETNS_RUN_DIR}/{name}");
        let file = File::open(&path).map_err(|e| NetError::Netns {
            name: name.to_string(),
            reason: format!("cannot open {path}: {e}"),
        })?;
        Ok(Netns {
            name: name.to_string(),
            fd: OwnedFd::from(file),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// its result. The calling thread's namespace is never touched.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("nasvisor-netns".into())
                .spawn_scoped(scope, move || {
                    // SAFETY: `fd` is a valid namespace file descriptor owned
                    // by `self`, which outlives this scoped thread; setns only
                    // changes the namespace of this dedicated thread, which
                    // exits when the closure returns.
                    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .map_err(|e| NetError::Netns {
                    name: self.name.clone(),
                    reason: format!("cannot spawn a thread: {e}"),
                })?;
            match handle.join() {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(NetError::Netns {
                    name: self.name.clone(),
                    reason: format!("setns failed: {e}"),
                }),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Netns {
    /// Makes `cmd` start inside this namespace (for QEMU, whose taps live
    /// here): the child enters it between fork and exec. The command keeps
    /// its own duplicate of the namespace descriptor, so it may be spawned
    /// after this handle is gone.
    pub fn enter_on_spawn(&self, cmd: &mut Command) -> Result<(), NetError> {
        let fd = self.fd.try_clone().map_err(|e| NetError::Netns {
            name: self.name.clone(),
            reason: format!("cannot duplicate the namespace descriptor: {e}"),
        })?;
        let hook = move || {
            // SAFETY: `fd` is a valid namespace descriptor owned by this
            // closure; setns is a plain system call, safe to make in the
            // child between fork and exec.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook only makes one system call and builds an
        // `io::Error` from errno, which does not allocate: nothing in it
        // depends on state (locks, allocator) that fork may leave
        // inconsistent.
        unsafe {
            cmd.pre_exec(hook);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names() {
        for ok in ["a", "nvtest-12ab", "ns_1.x", "X9"] {
            check_netns_name(ok).unwrap();
        }
        for bad in ["", "..", ".x", "-x", "a/b", "a b", &"n".repeat(65)] {
            let err = check_netns_name(bad).unwrap_err();
            assert!(err.to_string().starts_with("netns: "), "{err}");
        }
    }

    #[test]
    fn missing_netns_is_named() {
        let err = Netns::open("nasvisor-no-such-netns").unwrap_err();
        assert!(err.to_string().contains("nasvisor-no-such-netns"), "{err}");
    }
}
