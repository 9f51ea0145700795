//! The format of an image decided from its own headers, and what those
//! headers say about other files. Reads the file; runs nothing.

use super::{bad, SourceFormat, ACCEPTED, VMDK_SINGLE_FILE};
use crate::error::StorageError;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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
pub(super) fn detect(
    path: &Path,
    f: &mut std::fs::File,
    len: u64,
) -> Result<SourceFormat, StorageError> {
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
#[path = "headers_tests.rs"]
mod tests;
