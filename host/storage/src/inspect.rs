//! Safe inspection of an untrusted disk image, before anything opens it.
//!
//! An image can reference other files: a qcow2 external data file
//! (`data-file`, CVE-2024-4467), a backing file of any format (also through
//! `json:` or `nbd:` pseudo-filenames), VMDK extents in other files (a
//! descriptor file, `monolithicFlat`, `twoGbMaxExtent...`), a VMDK parent.
//! Opening such an image reads (or, for a VM, writes) those files. And
//! qemu's own format probing opens the image in whatever format its first
//! bytes claim. So the format is decided here, by reading the headers
//! ourselves; qemu-img only ever runs with that format pinned (`-f`), under
//! [`crate::limits`].
//!
//! The allow-list of input formats ([`SourceFormat`]):
//! - **qcow2** (versions 2 and 3) without a backing file, an external data
//!   file or encryption;
//! - **vmdk** as a single file: `monolithicSparse` or `streamOptimized`,
//!   without a parent;
//! - **vdi**, dynamic or fixed;
//! - **raw**: no header of any format qemu knows;
//! - **ISO 9660** (stored as it is, attached as a raw CD-ROM), without the
//!   header of another format in its first bytes.
//!
//! Everything else is refused by name: qcow (v1), qed, vpc/vhd, vhdx, dmg,
//! cloop, bochs, parallels, LUKS, VMDK descriptor files and VMDK3 (COWD), and
//! files that carry the headers of two formats at once (polyglots).
//!
//! Then `qemu-img info` (format pinned) must agree: no backing file, no data
//! file, no encryption, no child node other than the file itself, a VMDK of
//! an allowed create type whose only extent is the file itself, a virtual
//! size from 1 byte to [`crate::pool::MAX_VOLUME`]. Last, `qemu-img check`
//! (qcow2, vmdk, vdi) refuses damaged or truncated images.

use crate::error::StorageError;
use crate::qemu_img::QemuImg;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// An input format nasvisor accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Qcow2,
    Vmdk,
    Vdi,
    Raw,
    Iso,
}

impl SourceFormat {
    /// qemu's name of the format (`raw` for an ISO).
    pub fn qemu_name(self) -> &'static str {
        match self {
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Vmdk => "vmdk",
            SourceFormat::Vdi => "vdi",
            SourceFormat::Raw | SourceFormat::Iso => "raw",
        }
    }

    /// The name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Iso => "iso",
            other => other.qemu_name(),
        }
    }
}

/// The accepted formats, for error messages.
pub const ACCEPTED: &str =
    "qcow2, raw, vmdk (monolithicSparse or streamOptimized), vdi or ISO 9660";

/// VMDK create types that keep all data in the one file.
const VMDK_SINGLE_FILE: [&str; 2] = ["monolithicSparse", "streamOptimized"];

/// What a safe inspection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The canonical path that was inspected (give this one to qemu-img).
    pub path: PathBuf,
    pub format: SourceFormat,
    /// Guest-visible size in bytes (the file's size for an ISO).
    pub virtual_size: u64,
    /// Bytes the file occupies.
    pub actual_size: u64,
    /// The file as it was inspected: device, inode, size and change time.
    pub stamp: FileStamp,
}

/// Identifies one state of a file: any write, rename over it or
/// replacement changes it (the change time cannot be set back by its owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl Inspected {
    /// Refuses when the file is no longer the one inspected (replaced or
    /// written since): call it after reading it, before keeping the result.
    pub fn unchanged(&self) -> Result<(), StorageError> {
        let now = std::fs::metadata(&self.path).map_err(|e| StorageError::io(&self.path, e))?;
        if FileStamp::of(&now) != self.stamp {
            return Err(bad(
                &self.path,
                "the file changed while it was imported; nothing was kept",
            ));
        }
        Ok(())
    }
}

/// A header found in the first bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    Qcow2,
    Qcow1,
    Qed,
    VmdkSparse,
    Vmdk3,
    VmdkDescriptor,
    Vdi,
    Vpc,
    Vhdx,
    Dmg,
    Cloop,
    Bochs,
    Parallels,
    Luks,
    Iso,
}

impl Magic {
    fn name(self) -> &'static str {
        match self {
            Magic::Qcow2 => "qcow2",
            Magic::Qcow1 => "qcow (version 1)",
            Magic::Qed => "qed",
            Magic::VmdkSparse => "vmdk",
            Magic::Vmdk3 => "vmdk3 (COWD)",
            Magic::VmdkDescriptor => "vmdk descriptor",
            Magic::Vdi => "vdi",
            Magic::Vpc => "vpc (vhd)",
            Magic::Vhdx => "vhdx",
            Magic::Dmg => "dmg",
            Magic::Cloop => "cloop",
            Magic::Bochs => "bochs",
            Magic::Parallels => "parallels",
            Magic::Luks => "luks",
            Magic::Iso => "iso9660",
        }
    }
}

/// Bytes read from the start of a file for detection (through the ISO 9660
/// primary volume descriptor at 0x8000).
const HEAD: usize = 0x8800;

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        })
        .unwrap_or(0)
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .unwrap_or(0)
}

/// qemu's VMDK descriptor probe: after comment and blank lines, a
/// `version=1|2|3` line.
fn vmdk_descriptor(head: &[u8]) -> bool {
    let text = &head[..head.len().min(2048)];
    let mut p = 0;
    while p < text.len() {
        match text[p] {
            b'#' => {
                while p < text.len() && text[p] != b'\n' {
                    p += 1;
                }
                p += 1;
            }
            b' ' | b'\t' | b'\r' | b'\n' => p += 1,
            _ => {
                let rest = &text[p..];
                return [b"version=1", b"version=2", b"version=3"]
                    .iter()
                    .any(|v| rest.starts_with(*v))
                    || rest.starts_with(b"createType")
                    || rest.starts_with(b"CID=");
            }
        }
    }
    false
}

/// Every format header in `head` (the first [`HEAD`] bytes) and `tail`
/// (the last 512 bytes).
fn magics(head: &[u8], tail: &[u8]) -> Vec<Magic> {
    let mut m = Vec::new();
    let at0 = |sig: &[u8]| head.starts_with(sig);
    if at0(b"QFI\xfb") {
        m.push(if be32(head, 4) == 1 {
            Magic::Qcow1
        } else {
            Magic::Qcow2
        });
    }
    if at0(b"QED\0") {
        m.push(Magic::Qed);
    }
    if at0(b"KDMV") {
        m.push(Magic::VmdkSparse);
    }
    if at0(b"COWD") {
        m.push(Magic::Vmdk3);
    }
    if vmdk_descriptor(head) {
        m.push(Magic::VmdkDescriptor);
    }
    if le32(head, 0x40) == 0xbeda_107f {
        m.push(Magic::Vdi);
    }
    if at0(b"conectix") {
        m.push(Magic::Vpc);
    }
    if at0(b"vhdxfile") {
        m.push(Magic::Vhdx);
    }
    if tail.starts_with(b"koly") {
        m.push(Magic::Dmg);
    }
    if at0(b"#!/bin/sh\n#V2.0 Format") {
        m.push(Magic::Cloop);
    }
    if at0(b"Bochs Virtual HD Image") {
        m.push(Magic::Bochs);
    }
    if at0(b"WithoutFreeSpace") || at0(b"WithouFreSpacExt") {
        m.push(Magic::Parallels);
    }
    if at0(b"LUKS\xba\xbe") {
        m.push(Magic::Luks);
    }
    if head.get(0x8001..0x8006) == Some(b"CD001") {
        m.push(Magic::Iso);
    }
    m
}

fn bad(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::BadImage {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
fn read_at(f: &mut std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The qcow2 header's own word on other files: a backing file, an external
/// data file, encryption. `first_cluster` holds the file's first cluster
/// (or as much of it as exists).
fn qcow2_header(path: &Path, first_cluster: &[u8]) -> Result<(), StorageError> {
    let h = first_cluster;
    if h.len() < 72 {
        return Err(bad(path, "the qcow2 header is truncated"));
    }
    let version = be32(h, 4);
    if !(2..=3).contains(&version) {
        return Err(bad(
            path,
            format!("qcow2 version {version} is not supported"),
        ));
    }
    if be64(h, 8) != 0 || be32(h, 16) != 0 {
        return Err(bad(
            path,
            "the image has a backing file (it would read another file); add a standalone image",
        ));
    }
    if be32(h, 32) != 0 {
        return Err(bad(
            path,
            "the image is encrypted; add an unencrypted image",
        ));
    }
    let (ext_start, incompatible, autoclear) = if version == 3 {
        if h.len() < 104 {
            return Err(bad(path, "the qcow2 header is truncated"));
        }
        (be32(h, 100) as usize, be64(h, 72), be64(h, 88))
    } else {
        (72, 0, 0)
    };
    const EXTERNAL_DATA_FILE: u64 = 1 << 2;
    const RAW_EXTERNAL_DATA: u64 = 1 << 1;
    if incompatible & EXTERNAL_DATA_FILE != 0 || autoclear & RAW_EXTERNAL_DATA != 0 {
        return Err(bad(
            path,
            "the image keeps its data in an external data file (data-file), another file of \
             the host; add a standalone image",
        ));
    }
    // Header extensions: type, length, data padded to 8 bytes; type 0 ends.
    let mut at = ext_start;
    loop {
        if at + 8 > h.len() {
            return Err(bad(
                path,
                "the qcow2 header extensions run past the first cluster",
            ));
        }
        let (kind, len) = (be32(h, at), be32(h, at + 4) as usize);
        match kind {
            0 => break,
            0x4441_5441 => {
                return Err(bad(
                    path,
                    "the image names an external data file (data-file), another file of the \
                     host; add a standalone image",
                ))
            }
            0x0537_be77 => {
                return Err(bad(
                    path,
                    "the image is encrypted; add an unencrypted image",
                ))
            }
            _ => {}
        }
        at = at
            .checked_add(8 + len.div_ceil(8) * 8)
            .ok_or_else(|| bad(path, "a qcow2 header extension is malformed"))?;
    }
    Ok(())
}

/// A sparse VMDK's header and embedded descriptor: a single-file create
/// type, no parent, a non-zero capacity (a zero capacity makes qemu read the
/// embedded descriptor's extents, which name other files).
fn vmdk_header(path: &Path, f: &mut std::fs::File, head: &[u8]) -> Result<(), StorageError> {
    let io = |e| StorageError::io(path, e);
    if le64(head, 12) == 0 {
        return Err(bad(
            path,
            "a VMDK with capacity 0 is a descriptor whose extents are other files; add a \
             single-file VMDK (monolithicSparse or streamOptimized)",
        ));
    }
    let (desc_offset, desc_size) = (le64(head, 28), le64(head, 36));
    // qemu reads a parent's name from 0x200 as well as from the descriptor.
    let mut texts = vec![read_at(f, 0x200, 10 * 1024).map_err(io)?];
    if desc_offset != 0 {
        let size = desc_size.saturating_mul(512).min(1 << 20) as usize;
        texts.push(read_at(f, desc_offset.saturating_mul(512), size).map_err(io)?);
    }
    for t in &texts {
        let text = String::from_utf8_lossy(t);
        for line in text.lines().map(str::trim) {
            let (key, value) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim().trim_matches('"')),
                None => continue,
            };
            match key {
                "createType" if !VMDK_SINGLE_FILE.contains(&value) => {
                    return Err(bad(
                        path,
                        format!(
                            "VMDK create type {value:?} keeps data in other files; add a \
                             monolithicSparse or streamOptimized VMDK"
                        ),
                    ))
                }
                "parentFileNameHint" => {
                    return Err(bad(
                        path,
                        format!(
                            "the VMDK has a parent ({value:?}), a backing file; add a \
                             standalone image"
                        ),
                    ))
                }
                "parentCID" if !value.eq_ignore_ascii_case("ffffffff") => {
                    return Err(bad(
                        path,
                        "the VMDK is a delta of a parent disk (parentCID); add a standalone image",
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Decides the format of `path` from its headers alone and refuses what the
/// header says references other files. Runs nothing.
fn detect(path: &Path, f: &mut std::fs::File, len: u64) -> Result<SourceFormat, StorageError> {
    let io = |e| StorageError::io(path, e);
    let head = read_at(f, 0, HEAD).map_err(io)?;
    let tail = read_at(f, len.saturating_sub(512), 512).map_err(io)?;
    let found = magics(&head, &tail);
    let names = || {
        found
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let format = match found.as_slice() {
        [] => SourceFormat::Raw,
        [one] => match one {
            Magic::Qcow2 => SourceFormat::Qcow2,
            Magic::VmdkSparse => SourceFormat::Vmdk,
            Magic::Vdi => SourceFormat::Vdi,
            Magic::Iso => SourceFormat::Iso,
            Magic::VmdkDescriptor => {
                return Err(bad(
                    path,
                    "a VMDK descriptor file: its extents are other files; add a single-file \
                     VMDK (monolithicSparse or streamOptimized) or a qcow2",
                ))
            }
            Magic::Luks => {
                return Err(bad(
                    path,
                    "the image is encrypted (LUKS); add an unencrypted image",
                ))
            }
            other => {
                return Err(bad(
                    path,
                    format!(
                        "format {} is not accepted (accepted: {ACCEPTED})",
                        other.name()
                    ),
                ))
            }
        },
        _ => {
            return Err(bad(
                path,
                format!(
                "the file carries the headers of several formats ({}); such an image is refused",
                names()
            ),
            ))
        }
    };
    match format {
        SourceFormat::Qcow2 => {
            let cluster_bits = be32(&head, 20);
            if !(9..=21).contains(&cluster_bits) {
                return Err(bad(
                    path,
                    format!("qcow2 cluster bits {cluster_bits} are out of range"),
                ));
            }
            let cluster = read_at(f, 0, 1 << cluster_bits).map_err(io)?;
            qcow2_header(path, &cluster)?;
        }
        SourceFormat::Vmdk => vmdk_header(path, f, &head)?,
        SourceFormat::Vdi => {
            // 1: dynamic, 2: fixed; undo and differencing images have a parent.
            let kind = le32(&head, 0x4c);
            if !(1..=2).contains(&kind) {
                return Err(bad(
                    path,
                    format!("VDI image type {kind} is not accepted (dynamic or fixed only)"),
                ));
            }
        }
        SourceFormat::Raw | SourceFormat::Iso => {}
    }
    Ok(format)
}

/// Checks qemu-img's view of the image (format pinned): it must open
/// nothing but the file itself.
fn check_info(
    path: &Path,
    format: SourceFormat,
    v: &serde_json::Value,
) -> Result<u64, StorageError> {
    let file = path.to_string_lossy();
    if v["format"] != format.qemu_name() {
        return Err(bad(
            path,
            format!(
                "qemu-img reads the image as {} instead of {}",
                v["format"],
                format.qemu_name()
            ),
        ));
    }
    for k in [
        "backing-filename",
        "full-backing-filename",
        "backing-filename-format",
    ] {
        if let Some(b) = v.get(k) {
            return Err(bad(
                path,
                format!("the image has a backing file ({b}); add a standalone image"),
            ));
        }
    }
    if v["encrypted"] == true {
        return Err(bad(
            path,
            "the image is encrypted; add an unencrypted image",
        ));
    }
    // Every node qemu opened under the image must be the file itself.
    fn children_elsewhere(v: &serde_json::Value, file: &str, out: &mut Vec<String>) {
        for c in v["children"].as_array().into_iter().flatten() {
            let f = c["info"]["filename"].as_str().unwrap_or_default();
            if f != file {
                out.push(format!("{} ({f})", c["name"].as_str().unwrap_or("?")));
            }
            children_elsewhere(&c["info"], file, out);
        }
    }
    let mut elsewhere = Vec::new();
    children_elsewhere(v, &file, &mut elsewhere);
    if !elsewhere.is_empty() {
        return Err(bad(
            path,
            format!(
                "the image opens other files: {}; add a standalone image",
                elsewhere.join(", ")
            ),
        ));
    }
    let data = &v["format-specific"]["data"];
    match format {
        SourceFormat::Qcow2 => {
            if let Some(d) = data.get("data-file") {
                return Err(bad(
                    path,
                    format!(
                        "the image keeps its data in an external data file ({d}), another file \
                         of the host; add a standalone image"
                    ),
                ));
            }
            if data.get("encrypt").is_some() {
                return Err(bad(
                    path,
                    "the image is encrypted; add an unencrypted image",
                ));
            }
        }
        SourceFormat::Vmdk => {
            let kind = data["create-type"].as_str().unwrap_or_default();
            if !VMDK_SINGLE_FILE.contains(&kind) {
                return Err(bad(
                    path,
                    format!(
                        "VMDK create type {kind:?} keeps data in other files; add a \
                         monolithicSparse or streamOptimized VMDK"
                    ),
                ));
            }
            for e in data["extents"].as_array().into_iter().flatten() {
                let f = e["filename"].as_str().unwrap_or_default();
                if f != file {
                    return Err(bad(
                        path,
                        format!("the VMDK has an extent in another file ({f:?})"),
                    ));
                }
            }
        }
        _ => {}
    }
    let size = v["virtual-size"].as_u64().unwrap_or(0);
    if size == 0 {
        return Err(bad(path, "the image is empty (virtual size 0)"));
    }
    if size > crate::pool::MAX_VOLUME {
        return Err(bad(
            path,
            format!(
                "the virtual size ({size} bytes) is larger than {} bytes (64 TiB)",
                crate::pool::MAX_VOLUME
            ),
        ));
    }
    Ok(size)
}

/// Inspects an untrusted image file: its format from its own headers, then
/// `qemu-img info` and `check` with that format pinned, under the limits of
/// `img`. Refuses (with the reason) anything outside the allow-list and any
/// image that references another file. Opens nothing but `path`.
pub fn inspect(img: &QemuImg, path: &Path) -> Result<Inspected, StorageError> {
    let canon = path.canonicalize().map_err(|e| StorageError::io(path, e))?;
    let mut f = std::fs::File::open(&canon).map_err(|e| StorageError::io(path, e))?;
    let meta = f.metadata().map_err(|e| StorageError::io(path, e))?;
    if !meta.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    let len = meta.len();
    if len == 0 {
        return Err(bad(path, "the image is empty"));
    }
    let stamp = FileStamp::of(&meta);
    let format = detect(path, &mut f, len)?;
    drop(f);
    let actual_size = {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    };
    if format == SourceFormat::Iso {
        return Ok(Inspected {
            path: canon,
            format,
            virtual_size: len,
            actual_size,
            stamp,
        });
    }
    let relabel = |e: StorageError| match e {
        StorageError::BadImage { reason, .. } => bad(path, reason),
        StorageError::Limit {
            op, limit, value, ..
        } => StorageError::Limit {
            path: path.to_path_buf(),
            op,
            limit,
            value,
        },
        other => other,
    };
    let v = img.info_json(&canon, format.qemu_name()).map_err(relabel)?;
    let virtual_size = check_info(path, format, &v)?;
    img.check(&canon, format.qemu_name()).map_err(relabel)?;
    let found = Inspected {
        path: canon,
        format,
        virtual_size,
        actual_size,
        stamp,
    };
    // What qemu-img looked at is what the headers said.
    found.unchanged()?;
    Ok(found)
}

/// Whether a volume's qcow2 header names an external data file or
/// encryption (it is then not used as a volume). Reads only the header.
pub fn volume_header_ok(path: &Path) -> Result<(), StorageError> {
    let mut f = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
    let head = read_at(&mut f, 0, 104).map_err(|e| StorageError::io(path, e))?;
    if !head.starts_with(b"QFI\xfb") {
        return Err(bad(path, "not a qcow2 volume"));
    }
    let cluster_bits = be32(&head, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad(
            path,
            format!("qcow2 cluster bits {cluster_bits} are out of range"),
        ));
    }
    let cluster = read_at(&mut f, 0, 1 << cluster_bits).map_err(|e| StorageError::io(path, e))?;
    // A linked clone's backing file is allowed here; the caller checks where it is.
    let mut h = cluster;
    if h.len() >= 20 {
        h[8..20].fill(0);
    }
    qcow2_header(path, &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vmdk_descriptor_is_recognised_the_way_qemu_probes_it() {
        assert!(vmdk_descriptor(
            b"# Disk DescriptorFile\nversion=1\nCID=1\n"
        ));
        assert!(vmdk_descriptor(b"\n\n  version=3\r\n"));
        assert!(!vmdk_descriptor(b"\xeb\x3c\x90mkfs.fat"));
        assert!(!vmdk_descriptor(b"#!/bin/sh\necho hi\n"));
    }

    #[test]
    fn several_headers_in_one_file_are_all_found() {
        let mut head = vec![0u8; HEAD];
        head[..4].copy_from_slice(b"QFI\xfb");
        head[7] = 3;
        head[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(magics(&head, &[]), [Magic::Qcow2, Magic::Iso]);
        head[7] = 1;
        assert_eq!(magics(&head, &[]), [Magic::Qcow1, Magic::Iso]);
        assert_eq!(magics(&[0u8; 600], b"koly"), [Magic::Dmg]);
    }
}
