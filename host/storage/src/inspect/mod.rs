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

mod headers;

pub use headers::volume_header_ok;

use crate::error::StorageError;
use crate::qemu_img::QemuImg;
use headers::detect;
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

fn bad(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::BadImage {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
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
