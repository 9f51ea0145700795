//! Passing file descriptors to QEMU: `getfd` carries the descriptor as
//! `SCM_RIGHTS` ancillary data on the QMP socket and names it in QEMU's
//! monitor; a command that takes an fd by name (`migrate` with `fd:NAME`)
//! then takes it over; `closefd` drops a name no command took.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use serde_json::json;
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::{QmpClient, QmpError};

/// Writes `bytes` to `stream` with `fd` attached, in one `sendmsg`; returns
/// how many bytes went (the rest goes as plain writes).
pub(super) async fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<usize> {
    stream
        .async_io(Interest::WRITABLE, || {
            let fds = [fd];
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(std::io::Error::other(
                    "no room for the descriptor in the control message",
                ));
            }
            rustix::net::sendmsg(
                stream,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(std::io::Error::from)
        })
        .await
}

impl QmpClient {
    /// `getfd`: hands `fd` to QEMU under `name` (QEMU keeps its own
    /// duplicate; the caller's stays open). A name already given is
    /// replaced, its old descriptor closed.
    pub async fn getfd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.send_command(
            "getfd",
            Some(json!({ "fdname": name })),
            self.shared.timeout,
            Some(fd),
        )
        .await
        .map(drop)
    }

    /// `closefd`: closes the descriptor QEMU holds under `name`. `Ok(false)`
    /// when it holds none by that name (a command took it over, as a
    /// started `migrate` to `fd:NAME` does).
    pub async fn closefd(&self, name: &str) -> Result<bool, QmpError> {
        match self
            .execute("closefd", Some(json!({ "fdname": name })))
            .await
        {
            Ok(_) => Ok(true),
            Err(QmpError::Command { desc, .. }) if desc.contains("not found") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The descriptor arrives with the `getfd` line itself, so QEMU finds it
    /// when it runs that command.
    #[tokio::test]
    async fn getfd_carries_the_descriptor_with_its_own_message() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = UnixStream::from_std({
            a.set_nonblocking(true).unwrap();
            a
        })
        .unwrap();
        let passed = tempfile::tempfile().unwrap();
        let line = b"{\"execute\": \"getfd\"}\n";
        let sent = send_with_fd(&a, line, passed.as_fd()).await.unwrap();
        assert_eq!(sent, line.len());
        let mut buf = [0u8; 64];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &b,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            rustix::net::RecvFlags::empty(),
        )
        .unwrap();
        assert_eq!(&buf[..got.bytes], line);
        let mut fds = Vec::new();
        for msg in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(r) = msg {
                fds.extend(r);
            }
        }
        assert_eq!(fds.len(), 1, "one descriptor with the line");
        let st = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).unwrap();
        let (x, y) = (st(fds[0].as_fd()), st(passed.as_fd()));
        assert_eq!((x.st_dev, x.st_ino), (y.st_dev, y.st_ino), "the same file");
    }
}
