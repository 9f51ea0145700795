//! [`Net`]: the network namespace this crate operates in, with its
//! netlink socket.

use std::sync::{Mutex, MutexGuard};

use crate::error::NetError;
use crate::netlink::{Link, NlError, Rtnl};
use crate::netns::Netns;

/// A place to manage vswitches and taps: the host's network namespace (the
/// one of the thread that opened it) or a named one (`ip netns`).
///
/// Holds one netlink socket bound inside that namespace. Operations through
/// one `Net` are serialised, so a check-then-create sequence such as
/// [`crate::Vswitch::ensure`] is not interleaved with another through the
/// same `Net`.
#[derive(Debug)]
pub struct Net {
    netns: Option<Netns>,
    rtnl: Mutex<Rtnl>,
}

impl Net {
    /// Operates in `netns` if given, else in the caller's namespace.
    pub fn open(netns: Option<&str>) -> Result<Net, NetError> {
        match netns {
            Some(name) => Net::netns(name),
            None => Net::host(),
        }
    }

    /// Operates in the calling thread's network namespace (the host's, for a
    /// daemon that never changes namespace).
    pub fn host() -> Result<Net, NetError> {
        let rtnl = Rtnl::open().map_err(|source| NetError::Io {
            op: "open",
            what: "netlink socket in",
            name: "the host namespace".into(),
            source,
        })?;
        Ok(Net {
            netns: None,
            rtnl: Mutex::new(rtnl),
        })
    }

    /// Operates in the named namespace `/var/run/netns/<name>`.
    pub fn netns(name: &str) -> Result<Net, NetError> {
        let netns = Netns::open(name)?;
        let rtnl = netns.run(Rtnl::open)?.map_err(|source| NetError::Io {
            op: "open",
            what: "netlink socket in namespace",
            name: name.to_string(),
            source,
        })?;
        Ok(Net {
            netns: Some(netns),
            rtnl: Mutex::new(rtnl),
        })
    }

    /// The namespace's name, or `None` for the host's.
    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_ref().map(Netns::name)
    }

    /// Makes `cmd` start in this namespace (a no-op for the host's). QEMU
    /// must run where its taps are: spawn it through this.
    pub fn enter_on_spawn(&self, cmd: &mut std::process::Command) -> Result<(), NetError> {
        match &self.netns {
            Some(ns) => ns.enter_on_spawn(cmd),
            None => Ok(()),
        }
    }

    /// The link called `name`, if it exists.
    pub fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        self.lock()
            .get_link(name)
            .map_err(nl_err("get", "link", name))
    }

    /// Every link in the namespace.
    pub fn links(&self) -> Result<Vec<Link>, NetError> {
        let where_ = self.netns_name().unwrap_or("host").to_string();
        self.lock()
            .links()
            .map_err(nl_err("list", "links of namespace", &where_))
    }

    /// Exclusive use of the netlink socket for a multi-step operation.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Rtnl> {
        self.rtnl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` inside this namespace (on a dedicated thread for a named
    /// one, on the calling thread for the host's).
    pub(crate) fn run_in<T, F>(&self, f: F) -> Result<T, NetError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        match &self.netns {
            Some(ns) => ns.run(f),
            None => Ok(f()),
        }
    }
}

/// Maps a netlink failure to a [`NetError`] naming the operation and object.
pub(crate) fn nl_err<'a>(
    op: &'static str,
    what: &'static str,
    name: &'a str,
) -> impl FnOnce(NlError) -> NetError + 'a {
    move |e| NetError::Netlink {
        op,
        what,
        name: name.to_string(),
        errno: e.errno,
        reason: e.reason,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn net_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Net>();
    }
}
