//! The system image library: OS images that VMs are installed from.
//!
//! An image is added from a local file, an HTTP(S) URL (through a
//! [`Downloader`], under the rules of [`crate::download`]) or any reader
//! (an upload streamed through the API). It is first written under a temporary
//! name (hashed as it arrives, and checked against the SHA-256 given, if
//! any), then inspected without letting qemu probe it ([`crate::inspect`]:
//! the format allow-list, nothing that references another file, not damaged
//! or truncated). A disk image is then always rewritten by `qemu-img convert`
//! (format pinned, under [`crate::limits`]) into a fresh qcow2, so nothing of
//! the uploaded header survives and volumes can be linked clones of it; an
//! ISO is stored as it is. The metadata (`<name>.json`) is written last, so
//! an image exists only once it is complete; a failure leaves nothing
//! behind. The library directory is 0700 and its files 0600.

use crate::download::{fetch_url, Downloader};
use crate::error::StorageError;
use crate::inspect::{inspect, SourceFormat, ACCEPTED};
use crate::name;
use crate::private;
use crate::qemu_img::QemuImg;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest image accepted, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 256 << 30;

/// What the administrator says about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ImageSpec {
    /// "linux", "windows", "bsd", ...
    pub os_family: String,
    /// Free text, e.g. "debian-12".
    pub os_variant: String,
    /// The image runs cloud-init (or reads a NoCloud seed) at first boot.
    pub cloud_init: bool,
    /// "bios" or "uefi".
    pub firmware: String,
    /// A serial-console line the image prints when its first boot is done.
    pub ready_marker: Option<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            os_family: "linux".into(),
            os_variant: String::new(),
            cloud_init: true,
            firmware: "bios".into(),
            ready_marker: None,
        }
    }
}

/// An image of the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Image {
    pub name: String,
    /// "qcow2" or "iso".
    pub format: String,
    /// The format it was added in.
    pub source_format: String,
    pub virtual_size: u64,
    /// Bytes received, and their SHA-256.
    pub source_bytes: u64,
    pub source_sha256: String,
    /// Where it came from: a path, a URL or "upload".
    pub source: String,
    pub path: PathBuf,
    #[serde(flatten)]
    pub spec: ImageSpec,
}

/// The image library of one host.
#[derive(Debug, Clone)]
pub struct ImageLibrary {
    dir: PathBuf,
    img: QemuImg,
}

/// Removes temporary files unless disarmed.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            nasvisor_best_effort::remove_file(p);
        }
    }
}

/// A raw OS disk image is whole sectors with a partition table (the MBR
/// boot signature, which a protective MBR of a GPT disk also carries).
fn looks_like_raw_disk(path: &Path, len: u64) -> Result<bool, StorageError> {
    if len < 512 || !len.is_multiple_of(512) {
        return Ok(false);
    }
    let mut f = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(mbr[510] == 0x55 && mbr[511] == 0xaa)
}

fn check_spec(spec: &ImageSpec) -> Result<(), StorageError> {
    if !["bios", "uefi"].contains(&spec.firmware.as_str()) {
        return Err(StorageError::BadSize {
            field: "firmware",
            reason: format!("{:?} is not bios or uefi", spec.firmware),
        });
    }
    if spec.os_family.is_empty() || spec.os_family.len() > 32 {
        return Err(StorageError::BadSize {
            field: "os-family",
            reason: "must be 1 to 32 characters".into(),
        });
    }
    if let Some(m) = &spec.ready_marker {
        if m.is_empty() || m.len() > 256 || m.contains('\n') {
            return Err(StorageError::BadSize {
                field: "ready-marker",
                reason: "must be 1 to 256 characters on one line".into(),
            });
        }
    }
    Ok(())
}

/// What the caller knows of an image before it arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Its length: a shorter stream is a truncated upload.
    pub len: Option<u64>,
    /// Its SHA-256 (64 hex digits): checked before anything else is done
    /// with the bytes.
    pub sha256: Option<String>,
}

/// Checks a SHA-256 given by the administrator: 64 hex digits. Returns it
/// in lower case.
pub fn check_sha256(sha256: &str) -> Result<String, StorageError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StorageError::Download {
            field: "sha256",
            reason: format!("{sha256:?} is not a SHA-256 (64 hex digits)"),
        });
    }
    Ok(sha256.to_ascii_lowercase())
}

impl ImageLibrary {
    /// Opens (creating) the library directory, removes leftovers of a crash
    /// and makes the directory 0700 and its files 0600 (a library written
    /// by an older release).
    pub fn open(dir: &Path) -> Result<ImageLibrary, StorageError> {
        private::create_dir(dir)?;
        let lib = ImageLibrary {
            dir: dir.canonicalize().map_err(|e| StorageError::io(dir, e))?,
            img: QemuImg::default(),
        };
        for e in std::fs::read_dir(&lib.dir)
            .map_err(|e| StorageError::io(&lib.dir, e))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".incoming-") {
                nasvisor_best_effort::remove_file(&e.path());
            }
        }
        private::tighten_tree(&lib.dir)?;
        Ok(lib)
    }

    /// The library's `qemu-img` with other limits.
    pub fn with_qemu_img(mut self, img: QemuImg) -> ImageLibrary {
        self.img = img;
        self
    }

    /// The library's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn meta_path(&self, image: &str) -> PathBuf {
        self.dir.join(format!("{image}.json"))
    }

    /// All complete images, sorted by name.
    pub fn list(&self) -> Result<Vec<Image>, StorageError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let e = e.map_err(|e| StorageError::io(&self.dir, e))?;
            let f = e.file_name().to_string_lossy().to_string();
            if let Some(n) = f.strip_suffix(".json") {
                if name::check("image name", n).is_ok() {
                    out.push(self.get(n)?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One image.
    pub fn get(&self, image: &str) -> Result<Image, StorageError> {
        name::check("image name", image)?;
        let p = self.meta_path(image);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound {
                    what: "image",
                    name: image.to_string(),
                })
            }
            Err(e) => return Err(StorageError::io(&p, e)),
        };
        serde_json::from_str(&text).map_err(|e| StorageError::BadImage {
            path: p,
            reason: format!("bad metadata: {e}"),
        })
    }

    /// Deletes an image (metadata first, so it disappears atomically).
    pub fn delete(&self, image: &str) -> Result<(), StorageError> {
        let img = self.get(image)?;
        let m = self.meta_path(image);
        std::fs::remove_file(&m).map_err(|e| StorageError::io(&m, e))?;
        nasvisor_best_effort::remove_file(&img.path);
        Ok(())
    }

    /// Adds an image from a local file.
    pub fn add_file(
        &self,
        image: &str,
        src: &Path,
        spec: ImageSpec,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Image, StorageError> {
        let f = std::fs::File::open(src).map_err(|e| StorageError::io(src, e))?;
        let expected = Expected {
            len: f.metadata().map(|m| m.len()).ok(),
            sha256: None,
        };
        self.add_reader(
            image,
            f,
            expected,
            &src.display().to_string(),
            spec,
            progress,
        )
    }

    /// Adds an image from an HTTP or HTTPS URL, downloaded through
    /// `downloader` under the rules of [`fetch_url`].
    #[allow(clippy::too_many_arguments)]
    pub fn add_url(
        &self,
        downloader: &dyn Downloader,
        image: &str,
        url: &str,
        sha256: Option<&str>,
        read_timeout: Duration,
        spec: ImageSpec,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Image, StorageError> {
        name::check("image name", image)?;
        self.absent(image)?;
        let (reader, len) = fetch_url(downloader, url, sha256, read_timeout)?;
        let expected = Expected {
            len,
            sha256: sha256.map(str::to_string),
        };
        self.add_reader(image, reader, expected, url, spec, progress)
    }

    fn absent(&self, image: &str) -> Result<(), StorageError> {
        if self.meta_path(image).exists() {
            return Err(StorageError::Exists {
                what: "image",
                name: image.to_string(),
            });
        }
        Ok(())
    }

    /// Adds an image from a reader (an upload). What arrives must match
    /// `expected`: its length (a short stream is a truncated upload) and its
    /// SHA-256, both checked before the bytes are inspected. `progress`
    /// gets (bytes so far, expected total).
    pub fn add_reader(
        &self,
        image: &str,
        mut src: impl Read,
        expected: Expected,
        source: &str,
        spec: ImageSpec,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Image, StorageError> {
        name::check("image name", image)?;
        check_spec(&spec)?;
        let want_sha = expected.sha256.as_deref().map(check_sha256).transpose()?;
        self.absent(image)?;
        let pid = std::process::id();
        let incoming = self.dir.join(format!(".incoming-{image}-{pid}"));
        let converted = self.dir.join(format!(".incoming-{image}-{pid}.qcow2"));
        let mut cleanup = Cleanup(vec![incoming.clone(), converted.clone()]);

        // 1. Receive, hashing as we go.
        let mut out = private::create_file(&incoming)?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StorageError::BadImage {
                        path: PathBuf::from(source),
                        reason: format!("reading the image failed after {total} bytes: {e}"),
                    })
                }
            };
            total += n as u64;
            if total > MAX_IMAGE_BYTES {
                return Err(StorageError::BadSize {
                    field: "image",
                    reason: format!("larger than {MAX_IMAGE_BYTES} bytes"),
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| StorageError::io(&incoming, e))?;
            progress(total, expected.len);
        }
        out.sync_all().map_err(|e| StorageError::io(&incoming, e))?;
        drop(out);
        if let Some(want) = expected.len {
            if total != want {
                return Err(StorageError::BadImage {
                    path: PathBuf::from(source),
                    reason: format!("truncated: received {total} of {want} bytes"),
                });
            }
        }
        if total == 0 {
            return Err(StorageError::BadImage {
                path: PathBuf::from(source),
                reason: "the image is empty".into(),
            });
        }
        let sha256 = hex::encode(hasher.finalize());
        if let Some(want) = want_sha {
            if sha256 != want {
                return Err(StorageError::Download {
                    field: "sha256",
                    reason: format!(
                        "the image received from {source} has SHA-256 {sha256}, not {want}; \
                         nothing was added"
                    ),
                });
            }
        }

        // 2. Inspect (nothing opens the file in a format it claims), then store.
        let found = inspect(&self.img, &incoming).map_err(|e| relabel(e, source))?;
        let (format, stored) = if found.format == SourceFormat::Iso {
            let dst = self.dir.join(format!("{image}.iso"));
            std::fs::rename(&incoming, &dst).map_err(|e| StorageError::io(&dst, e))?;
            cleanup.0.push(dst.clone());
            ("iso", dst)
        } else {
            if found.format == SourceFormat::Raw && !looks_like_raw_disk(&incoming, total)? {
                return Err(StorageError::BadImage {
                    path: PathBuf::from(source),
                    reason: format!(
                        "not a recognised disk image: no header of {ACCEPTED}, and no partition \
                         table (raw disks need an MBR or GPT, in whole 512-byte sectors)"
                    ),
                });
            }
            let dst = self.dir.join(format!("{image}.qcow2"));
            self.img
                .convert(
                    &found.path,
                    found.format.qemu_name(),
                    found.virtual_size,
                    &converted,
                    |_| {},
                )
                .map_err(|e| relabel(e, source))?;
            found.unchanged().map_err(|e| relabel(e, source))?;
            std::fs::rename(&converted, &dst).map_err(|e| StorageError::io(&dst, e))?;
            cleanup.0.push(dst.clone());
            ("qcow2", dst)
        };
        let meta = Image {
            name: image.to_string(),
            format: format.to_string(),
            source_format: found.format.name().to_string(),
            virtual_size: found.virtual_size,
            source_bytes: total,
            source_sha256: sha256,
            source: source.to_string(),
            path: stored,
            spec,
        };
        // 3. Metadata last, atomically: from here on the image exists.
        let mp = self.meta_path(image);
        let tmp = self.dir.join(format!(".incoming-{image}-{pid}.json"));
        cleanup.0.push(tmp.clone());
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| StorageError::BadImage {
            path: mp.clone(),
            reason: format!("cannot write the metadata: {e}"),
        })?;
        private::create_file(&tmp)?
            .write_all(&json)
            .map_err(|e| StorageError::io(&tmp, e))?;
        std::fs::rename(&tmp, &mp).map_err(|e| StorageError::io(&mp, e))?;
        cleanup.0.clear();
        // The converted source is gone with the cleanup of `incoming`.
        nasvisor_best_effort::remove_file(&incoming);
        Ok(meta)
    }
}

/// Names the image by its source (not the temporary file) in an error.
fn relabel(e: StorageError, source: &str) -> StorageError {
    match e {
        StorageError::BadImage { reason, .. } => StorageError::BadImage {
            path: PathBuf::from(source),
            reason,
        },
        StorageError::Limit {
            op, limit, value, ..
        } => StorageError::Limit {
            path: PathBuf::from(source),
            op,
            limit,
            value,
        },
        other => other,
    }
}
