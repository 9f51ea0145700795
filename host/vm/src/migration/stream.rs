//! The socket of the memory stream, opened here rather than by QEMU, so
//! that the data QEMU has written and the network has not taken yet stays
//! small ([`UNSENT_CAP`]).
//!
//! Why: at the switch the source pauses the guest, and the pause lasts
//! until the mirrors' NBD flush and the rest of the stream are through.
//! When QEMU opens the socket itself, the kernel grows its send buffer up
//! to `net.ipv4.tcp_wmem` (4 MiB) while the target reads the stream more
//! slowly than the source writes it, and that backlog (about 3.7 MiB) is
//! ahead of the end of the stream at the pause. With the cap, the unsent
//! data waits in QEMU instead, where the stream's last pass does not queue
//! behind it.
//!
//! The socket goes to QEMU over QMP (`getfd`, `SCM_RIGHTS`) and the stream
//! is started with `migrate` to `fd:NAME` ([`super::migrate_out`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::MigrateError;

/// The most data the stream's socket holds unsent, bytes
/// (`TCP_NOTSENT_LOWAT`; `SO_SNDBUF` on a Unix socket).
pub const UNSENT_CAP: u32 = 128 << 10;

/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a memory stream goes: QEMU's `tcp:HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Tcp { host: String, port: u16 },
    Unix(String),
}

impl Destination {
    fn parse(uri: &str) -> Result<Destination, MigrateError> {
        let bad = |reason: &str| MigrateError::BadUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = uri.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            return Ok(Destination::Unix(path.to_string()));
        }
        let Some(rest) = uri.strip_prefix("tcp:") else {
            return Err(bad("only tcp:HOST:PORT and unix:PATH are supported"));
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("no port after the host"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = port
            .parse()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        Ok(Destination::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

/// The connected socket of one outgoing memory stream, capped. The caller
/// keeps it for as long as the migration runs (see
/// [`super::migrate_out`]) and drops it after: QEMU holds its own copy.
#[derive(Debug)]
pub struct MigrationStream {
    fd: OwnedFd,
    uri: String,
    tcp: bool,
}

impl MigrationStream {
    /// Connects to `uri` (`tcp:HOST:PORT` or `unix:PATH`, where the target
    /// listens) and caps the unsent data at [`UNSENT_CAP`].
    pub async fn connect(uri: &str) -> Result<MigrationStream, MigrateError> {
        let dest = Destination::parse(uri)?;
        let failed = |source: std::io::Error| MigrateError::Connect {
            uri: uri.to_string(),
            source,
        };
        let timed_out = |_| MigrateError::Timeout {
            what: format!("the connection to {uri}"),
            waited: CONNECT_TIMEOUT,
        };
        let (fd, tcp): (OwnedFd, bool) = match &dest {
            Destination::Tcp { host, port } => {
                let s = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(timed_out)?
                .map_err(failed)?;
                let s = s.into_std().map_err(failed)?;
                // QEMU drives the socket; it starts out blocking, as a
                // socket QEMU connects itself does.
                s.set_nonblocking(false).map_err(failed)?;
                (s.into(), true)
            }
            Destination::Unix(path) => {
                let s =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                        .await
                        .map_err(timed_out)?
                        .map_err(failed)?;
                let s = s.into_std().map_err(failed)?;
                s.set_nonblocking(false).map_err(failed)?;
                (s.into(), false)
            }
        };
        let stream = MigrationStream {
            fd,
            uri: uri.to_string(),
            tcp,
        };
        stream.cap().map_err(failed)?;
        Ok(stream)
    }

    /// Where the stream goes.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn cap(&self) -> std::io::Result<()> {
        if !self.tcp {
            // No unsent-data mark on a Unix socket: its buffer is the cap.
            return rustix::net::sockopt::set_socket_send_buffer_size(
                &self.fd,
                UNSENT_CAP as usize,
            )
            .map_err(std::io::Error::from);
        }
        let value: libc::c_int = UNSENT_CAP as libc::c_int;
        // SAFETY: `self.fd` is an open TCP socket owned by `self`; `value`
        // is a live `c_int` and the length passed is its size, as
        // `TCP_NOTSENT_LOWAT` expects.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Bytes written into the socket that the network has not taken yet
    /// (`SIOCOUTQNSD`; on a Unix socket, what the peer has not read:
    /// `SIOCOUTQ`).
    pub fn unsent_bytes(&self) -> std::io::Result<u64> {
        let request = if self.tcp {
            libc::SIOCOUTQNSD
        } else {
            libc::TIOCOUTQ
        };
        let mut value: libc::c_int = 0;
        // SAFETY: `self.fd` is an open socket owned by `self`; both
        // requests write one `c_int` through the pointer, which points at
        // the live local `value`.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, &mut value) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(u64::try_from(value).unwrap_or(0))
    }
}

impl AsFd for MigrationStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_uris_parse_into_their_destination() {
        assert_eq!(
            Destination::parse("tcp:10.0.0.2:4444").unwrap(),
            Destination::Tcp {
                host: "10.0.0.2".into(),
                port: 4444
            }
        );
        assert_eq!(
            Destination::parse("tcp:[fd00::2]:4444").unwrap(),
            Destination::Tcp {
                host: "fd00::2".into(),
                port: 4444
            }
        );
        assert_eq!(
            Destination::parse("unix:/run/m.sock").unwrap(),
            Destination::Unix("/run/m.sock".into())
        );
        for (bad, why) in [
            ("exec:cat", "only tcp"),
            ("tcp:10.0.0.2", "no port"),
            ("tcp::4444", "no host"),
            ("tcp:h:99999", "port"),
            ("unix:", "no socket path"),
        ] {
            let msg = Destination::parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad) && msg.contains(why), "{bad}: {msg}");
        }
    }

    /// A TCP stream to a peer that never reads keeps its unsent data near
    /// the cap: writes stop there (the socket is blocking, as QEMU gets it).
    #[tokio::test]
    async fn a_stream_socket_stops_taking_data_near_the_cap() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = MigrationStream::connect(&format!("tcp:127.0.0.1:{port}"))
            .await
            .unwrap();
        let (_peer, _) = listener.accept().unwrap();
        let fd = stream.fd.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write as _;
            let mut f = std::net::TcpStream::from(fd);
            let chunk = vec![0u8; 64 << 10];
            // Ends on the error of the shutdown below.
            while f.write_all(&chunk).is_ok() {}
        });
        let mut most = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            most = most.max(stream.unsent_bytes().unwrap());
        }
        rustix::net::shutdown(&stream, rustix::net::Shutdown::Both).unwrap();
        writer.join().unwrap();
        assert!(most > 0, "the writer never got ahead of the peer");
        assert!(
            most < 2 * u64::from(UNSENT_CAP) + (64 << 10),
            "unsent: {most} bytes"
        );
    }
}
