//! The bundle's tar layout, block by block.
//!
//! Reading does not use `tar::Archive`: a verifier must bound what it reads
//! before the signature is checked, take nothing but plain members (no
//! links, no long-name or PAX records that the archive reader would expand
//! on its own), and see what follows the last member. So it reads 512-byte
//! blocks itself and parses each header with `tar::Header` (checksum,
//! type, name, size). Writing goes through `tar::Builder` with ustar
//! headers.

use crate::error::BundleError;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// A tar block.
pub(crate) const BLOCK: usize = 512;

/// What may follow the last member: the end-of-archive marker (two zero
/// blocks) and padding up to GNU tar's default record of 20 blocks.
const MIN_END: usize = 2 * BLOCK;
const MAX_END: usize = 20 * BLOCK;

/// A member's header: its name and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    pub size: u64,
}

/// Reads exactly `buf.len()` bytes, or says the bundle ends inside `what`.
pub(crate) fn read_exact<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &str,
) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            BundleError::Truncated {
                what: what.to_string(),
            }
        } else {
            BundleError::Io {
                context: format!("cannot read {what}"),
                source: e,
            }
        }
    })
}

/// Reads the header of the next member, where `expected` belongs; `None`
/// at the end-of-archive marker (a zero block).
pub(crate) fn next_member<R: Read>(
    r: &mut R,
    expected: &str,
) -> Result<Option<Member>, BundleError> {
    let mut block = [0u8; BLOCK];
    read_exact(r, &mut block, &format!("the header of {expected}"))?;
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    parse_header(&block, expected).map(Some)
}

fn parse_header(block: &[u8; BLOCK], expected: &str) -> Result<Member, BundleError> {
    let bad = |reason: String| BundleError::Malformed {
        member: format!("the header of {expected}"),
        reason,
    };
    let header = tar::Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|e| bad(format!("checksum field: {e}")))?;
    let mut recomputed = header.clone();
    recomputed.set_cksum();
    if recomputed.cksum().ok() != Some(stored) {
        return Err(bad(
            "bad header checksum: not a tar archive, or a damaged one".into(),
        ));
    }
    let name = String::from_utf8(header.path_bytes().into_owned())
        .map_err(|_| bad("the member name is not UTF-8".into()))?;
    if header.entry_type() != tar::EntryType::Regular {
        return Err(BundleError::Malformed {
            member: name,
            reason: format!(
                "a {:?} member: a bundle holds only regular files",
                header.entry_type()
            ),
        });
    }
    let size = header.size().map_err(|e| bad(format!("size field: {e}")))?;
    Ok(Member { name, size })
}

/// Skips the zero padding after a member of `size` bytes.
pub(crate) fn skip_padding<R: Read>(r: &mut R, size: u64, what: &str) -> Result<(), BundleError> {
    let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    let mut buf = [0u8; BLOCK];
    read_exact(r, &mut buf[..pad], what)
}

/// Reads a small member whole (its size already bounded), then its padding.
pub(crate) fn read_small<R: Read>(r: &mut R, m: &Member) -> Result<Vec<u8>, BundleError> {
    let len = usize::try_from(m.size).map_err(|_| BundleError::Malformed {
        member: m.name.clone(),
        reason: "too large".into(),
    })?;
    let mut bytes = vec![0u8; len];
    read_exact(r, &mut bytes, &m.name)?;
    skip_padding(r, m.size, &m.name)?;
    Ok(bytes)
}

/// Checks what follows the last member: the end-of-archive marker and at
/// most a record's padding, all zero, then the end of the file.
pub(crate) fn check_end<R: Read>(r: &mut R) -> Result<(), BundleError> {
    let mut tail = Vec::with_capacity(MAX_END + 1);
    r.take(MAX_END as u64 + 1)
        .read_to_end(&mut tail)
        .map_err(BundleError::io("cannot read the end of the bundle"))?;
    if let Some(first) = tail
        .get(..BLOCK)
        .and_then(|b| <&[u8; BLOCK]>::try_from(b).ok())
    {
        if first.iter().any(|&b| b != 0) {
            let found = parse_header(first, "the end of the bundle")
                .map(|m| m.name)
                .unwrap_or_else(|_| "(not a tar header)".into());
            return Err(BundleError::UnexpectedMember {
                found,
                expected: "the end of the bundle".into(),
            });
        }
    }
    if tail.len() < MIN_END {
        return Err(BundleError::Truncated {
            what: "the end-of-archive marker".into(),
        });
    }
    if tail.len() > MAX_END {
        return Err(BundleError::TrailingData {
            reason: format!("more than {MAX_END} bytes follow the last member"),
        });
    }
    if tail.iter().any(|&b| b != 0) {
        return Err(BundleError::TrailingData {
            reason: "non-zero bytes after the end-of-archive marker".into(),
        });
    }
    Ok(())
}

/// The payload as it streams: at most its signed size is read, and every
/// byte is hashed.
pub(crate) struct PayloadReader<R> {
    inner: R,
    size: u64,
    read: u64,
    hasher: Sha256,
}

impl<R: Read> PayloadReader<R> {
    pub(crate) fn new(inner: R, size: u64) -> Self {
        PayloadReader {
            inner,
            size,
            read: 0,
            hasher: Sha256::new(),
        }
    }

    /// The SHA-256 of what was read, in hex (hashing a file whole).
    pub(crate) fn digest(self) -> String {
        hex::encode(self.hasher.finalize())
    }

    /// Checks that every signed byte came and that they are the signed
    /// ones; gives back the reader, after the payload.
    pub(crate) fn finish(self, signed_sha256: &str) -> Result<R, BundleError> {
        if self.read < self.size {
            return Err(BundleError::PayloadTruncated {
                size: self.size,
                got: self.read,
            });
        }
        let actual = hex::encode(self.hasher.finalize());
        if actual != signed_sha256 {
            return Err(BundleError::PayloadTampered {
                signed: signed_sha256.to_string(),
                actual,
            });
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.size - self.read;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Appends a member of `size` bytes read from `data` (which must give
/// exactly that many; callers check it afterwards).
pub(crate) fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            append(&mut b, name, data.len() as u64, 0, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn members_are_read_in_order_then_the_end() {
        let bytes = archive(&[("a", b"hello"), ("b", &[7u8; 600])]);
        let mut r = &bytes[..];
        let a = next_member(&mut r, "a").unwrap().unwrap();
        assert_eq!(
            a,
            Member {
                name: "a".into(),
                size: 5
            }
        );
        assert_eq!(read_small(&mut r, &a).unwrap(), b"hello");
        let b = next_member(&mut r, "b").unwrap().unwrap();
        assert_eq!(read_small(&mut r, &b).unwrap(), vec![7u8; 600]);
        check_end(&mut r).unwrap();
    }

    #[test]
    fn a_damaged_header_a_link_and_a_short_file_are_refused() {
        let mut bytes = archive(&[("a", b"x")]);
        bytes[0] ^= 1;
        let e = next_member(&mut &bytes[..], "a").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "manifest.json", "/etc/shadow")
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let e = next_member(&mut &bytes[..], "manifest.json").unwrap_err();
        assert!(e.to_string().contains("only regular files"), "{e}");

        let bytes = archive(&[("a", b"x")]);
        let e = next_member(&mut &bytes[..100], "a").unwrap_err();
        assert!(matches!(e, BundleError::Truncated { .. }), "{e}");
    }

    #[test]
    fn the_end_takes_padding_but_no_member_or_data() {
        let end = vec![0u8; 2 * BLOCK];
        check_end(&mut &end[..]).unwrap();
        check_end(&mut &vec![0u8; 20 * BLOCK][..]).unwrap();

        let e = check_end(&mut &end[..BLOCK]).unwrap_err();
        assert!(matches!(e, BundleError::Truncated { .. }), "{e}");
        let e = check_end(&mut &vec![0u8; 21 * BLOCK][..]).unwrap_err();
        assert!(matches!(e, BundleError::TrailingData { .. }), "{e}");
        let mut dirty = end.clone();
        dirty[BLOCK + 3] = 1;
        let e = check_end(&mut &dirty[..]).unwrap_err();
        assert!(matches!(e, BundleError::TrailingData { .. }), "{e}");
        let extra = archive(&[("extra", b"x")]);
        let e = check_end(&mut &extra[..]).unwrap_err();
        assert!(
            matches!(&e, BundleError::UnexpectedMember { found, .. } if found == "extra"),
            "{e}"
        );
    }

    #[test]
    fn the_payload_reader_stops_at_its_size_and_checks_the_digest() {
        let data = b"payload-and-more";
        let sha = nasvisor_signing::sha256_hex(b"payload");
        let mut p = PayloadReader::new(&data[..], 7);
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"payload");
        let rest = p.finish(&sha).unwrap();
        assert_eq!(rest, b"-and-more");

        let mut p = PayloadReader::new(&data[..3], 7);
        std::io::copy(&mut p, &mut std::io::sink()).unwrap();
        let e = p.finish(&sha).unwrap_err();
        assert!(
            matches!(e, BundleError::PayloadTruncated { size: 7, got: 3 }),
            "{e}"
        );

        let mut p = PayloadReader::new(&b"paylo@d"[..], 7);
        std::io::copy(&mut p, &mut std::io::sink()).unwrap();
        let e = p.finish(&sha).unwrap_err();
        assert!(matches!(e, BundleError::PayloadTampered { .. }), "{e}");
    }
}
