//! Where a payload streams while it is verified.
//!
//! Bytes reach the sink before the last of them has been hashed, so a sink
//! holds them as not yet good: the verifier calls [`PayloadSink::commit`]
//! only once the size and the digest match the signed manifest, and
//! [`PayloadSink::discard`] on any refusal. A sink must leave nothing that
//! could be taken for a good payload until it is committed: a file sink
//! writes a temporary file and renames it on commit; a slot sink (the
//! install step) will mark the slot bootable only on commit.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A destination of a payload that is good only once committed.
pub trait PayloadSink: Write {
    /// What a committed sink gives back (a path, the bytes, nothing).
    type Output;

    /// Called once, after every byte was written and matched the signed
    /// size and digest: make the payload durable and visible.
    fn commit(self) -> std::io::Result<Self::Output>;

    /// Called once, when the payload is refused (or writing failed): undo
    /// or invalidate what was written.
    fn discard(self);
}

/// A sink that keeps nothing: the payload is only hashed (`firmware
/// verify` without `--extract`).
#[derive(Debug, Default)]
pub struct DigestOnly;

impl Write for DigestOnly {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PayloadSink for DigestOnly {
    type Output = ();
    fn commit(self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(self) {}
}

/// The payload in memory (tests, small payloads).
impl PayloadSink for Vec<u8> {
    type Output = Vec<u8>;
    fn commit(self) -> std::io::Result<Vec<u8>> {
        Ok(self)
    }
    fn discard(self) {}
}

/// The payload into a file: written to a temporary file beside `dest`
/// (mode 0600), renamed to `dest` on commit, removed on discard. `dest` is
/// not touched before the commit.
#[derive(Debug)]
pub struct FileSink {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl FileSink {
    /// A sink that will become `dest`.
    pub fn create(dest: &Path) -> std::io::Result<FileSink> {
        let tmp = crate::state::temp_beside(dest, ".partial")?;
        Ok(FileSink {
            tmp,
            dest: dest.to_path_buf(),
        })
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

impl PayloadSink for FileSink {
    type Output = PathBuf;
    fn commit(self) -> std::io::Result<PathBuf> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.dest).map_err(|e| e.error)?;
        Ok(self.dest)
    }
    fn discard(self) {
        let path = self.tmp.path().to_path_buf();
        if let Err(e) = self.tmp.close() {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the refused payload's temporary file");
        }
    }
}
