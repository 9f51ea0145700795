//! The system image library: OS images that VMs are installed from.
//!
//! An image is added from a local file, an HTTP(S) URL or any reader (an
//! upload streamed through the API). It is first written under a temporary
//! name, then checked: an ISO by its ISO 9660 signature, a disk image with
//! `qemu-img info` and `check` (qcow2, raw, vmdk or vdi; no backing file; not
//! truncated). Disk images are stored as qcow2 (converted if needed) so that
//! volumes can be linked clones of them; ISOs are stored as they are. The
//! metadata (`<name>.json`) is written last, so an image exists only once it
//! is complete; a failure leaves nothing behind.

use crate::error::StorageError;
use crate::name;
use crate::qemu_img::{QemuImg, IMPORT_FORMATS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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
            let _ = std::fs::remove_file(p);
        }
    }
}

fn is_iso(path: &Path) -> Result<bool, StorageError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut magic = [0u8; 5];
    if f.seek(SeekFrom::Start(0x8001)).is_err() || f.read_exact(&mut magic).is_err() {
        return Ok(false);
    }
    Ok(&magic == b"CD001")
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

/// Starts downloading `url` (http or https): the body as a reader and its
/// announced length. Callers that wrap the reader (to cancel, to count) pass
/// it on to [`ImageLibrary::add_reader`].
pub fn fetch_url(url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), StorageError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(StorageError::BadSize {
            field: "url",
            reason: format!("{url:?} is not an http:// or https:// URL"),
        });
    }
    let resp = ureq::get(url).call().map_err(|e| StorageError::BadImage {
        path: PathBuf::from(url),
        reason: format!("download failed: {e}"),
    })?;
    let len = resp.header("Content-Length").and_then(|v| v.parse().ok());
    Ok((resp.into_reader(), len))
}

impl ImageLibrary {
    /// Opens (creating) the library directory and removes leftovers of a crash.
    pub fn open(dir: &Path) -> Result<ImageLibrary, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let lib = ImageLibrary {
            dir: dir.canonicalize().map_err(|e| StorageError::io(dir, e))?,
            img: QemuImg::default(),
        };
        for e in std::fs::read_dir(&lib.dir)
            .map_err(|e| StorageError::io(&lib.dir, e))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".incoming-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(lib)
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
        let _ = std::fs::remove_file(&img.path);
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
        let len = f.metadata().map(|m| m.len()).ok();
        self.add_reader(image, f, len, &src.display().to_string(), spec, progress)
    }

    /// Adds an image from an HTTP or HTTPS URL.
    pub fn add_url(
        &self,
        image: &str,
        url: &str,
        spec: ImageSpec,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Image, StorageError> {
        name::check("image name", image)?;
        self.absent(image)?;
        let (reader, len) = fetch_url(url)?;
        self.add_reader(image, reader, len, url, spec, progress)
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

    /// Adds an image from a reader (an upload). `expected_len`, when known,
    /// must match what arrives: a short stream is a truncated upload.
    /// `progress` gets (bytes so far, expected total).
    pub fn add_reader(
        &self,
        image: &str,
        mut src: impl Read,
        expected_len: Option<u64>,
        source: &str,
        spec: ImageSpec,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Image, StorageError> {
        name::check("image name", image)?;
        check_spec(&spec)?;
        self.absent(image)?;
        let pid = std::process::id();
        let incoming = self.dir.join(format!(".incoming-{image}-{pid}"));
        let converted = self.dir.join(format!(".incoming-{image}-{pid}.qcow2"));
        let mut cleanup = Cleanup(vec![incoming.clone(), converted.clone()]);

        // 1. Receive, hashing as we go.
        let mut out =
            std::fs::File::create(&incoming).map_err(|e| StorageError::io(&incoming, e))?;
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
            progress(total, expected_len);
        }
        out.sync_all().map_err(|e| StorageError::io(&incoming, e))?;
        drop(out);
        if let Some(want) = expected_len {
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

        // 2. Check and store.
        let (format, source_format, stored, virtual_size) = if is_iso(&incoming)? {
            let dst = self.dir.join(format!("{image}.iso"));
            std::fs::rename(&incoming, &dst).map_err(|e| StorageError::io(&dst, e))?;
            cleanup.0.push(dst.clone());
            ("iso".to_string(), "iso".to_string(), dst, total)
        } else {
            let info = self
                .img
                .info(&incoming, None)
                .map_err(|e| relabel(e, source))?;
            if !IMPORT_FORMATS.contains(&info.format.as_str()) {
                return Err(StorageError::BadImage {
                    path: PathBuf::from(source),
                    reason: format!(
                        "format {:?} is not supported (qcow2, raw, vmdk, vdi or ISO)",
                        info.format
                    ),
                });
            }
            if info.backing_file.is_some() {
                return Err(StorageError::BadImage {
                    path: PathBuf::from(source),
                    reason: "the image has a backing file; add a standalone image".into(),
                });
            }
            self.img
                .check(&incoming, &info.format)
                .map_err(|e| relabel(e, source))?;
            if info.format == "raw" && !looks_like_raw_disk(&incoming, total)? {
                return Err(StorageError::BadImage {
                    path: PathBuf::from(source),
                    reason: "not a recognised disk image: no qcow2/vmdk/vdi header, ISO signature \
                             or partition table (raw disks need an MBR or GPT, in whole 512-byte sectors)"
                        .into(),
                });
            }
            let dst = self.dir.join(format!("{image}.qcow2"));
            if info.format == "qcow2" {
                std::fs::rename(&incoming, &dst).map_err(|e| StorageError::io(&dst, e))?;
            } else {
                self.img
                    .convert(&incoming, &info.format, &converted, |_| {})?;
                std::fs::rename(&converted, &dst).map_err(|e| StorageError::io(&dst, e))?;
            }
            cleanup.0.push(dst.clone());
            ("qcow2".to_string(), info.format, dst, info.virtual_size)
        };
        let meta = Image {
            name: image.to_string(),
            format,
            source_format,
            virtual_size,
            source_bytes: total,
            source_sha256: hex::encode(hasher.finalize()),
            source: source.to_string(),
            path: stored,
            spec,
        };
        // 3. Metadata last, atomically: from here on the image exists.
        let mp = self.meta_path(image);
        let tmp = self.dir.join(format!(".incoming-{image}-{pid}.json"));
        cleanup.0.push(tmp.clone());
        std::fs::write(&tmp, serde_json::to_vec_pretty(&meta).expect("serializes"))
            .map_err(|e| StorageError::io(&tmp, e))?;
        std::fs::rename(&tmp, &mp).map_err(|e| StorageError::io(&mp, e))?;
        cleanup.0.clear();
        Ok(meta)
    }
}

fn relabel(e: StorageError, source: &str) -> StorageError {
    match e {
        StorageError::BadImage { reason, .. } => StorageError::BadImage {
            path: PathBuf::from(source),
            reason,
        },
        other => other,
    }
}
