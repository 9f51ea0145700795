//! # nasvisor storage
//!
//! Pools (directories on a NAS volume), qcow2 volumes and their internal
//! snapshots, linked and full clones, and import of raw, qcow2, vmdk and vdi
//! images, all through `qemu-img`. Names are checked so that no path escapes
//! its pool, and every operation is all-or-nothing. Untrusted images are
//! inspected without letting qemu probe them ([`inspect`]) and `qemu-img`
//! runs under resource limits ([`limits`]). Everything written is private
//! (files 0600, directories 0700).

pub mod download;
pub mod error;
pub mod images;
pub mod inspect;
pub mod limits;
pub mod name;
pub mod pool;
pub mod pool_dir;
pub mod private;
pub mod qemu_img;
pub mod seed;

pub use download::{
    fetch_url, Downloader, RequestLimits, Response, TransportError, DOWNLOAD_READ_TIMEOUT,
};
pub use error::StorageError;
pub use images::{check_sha256, Expected, Image, ImageLibrary, ImageSpec};
pub use inspect::{inspect, FileStamp, Inspected, SourceFormat};
pub use limits::Limits;
pub use pool::{fs_usage, Pool, PoolUsage, VolumeInfo};
pub use qemu_img::{ImageInfo, QemuImg, SnapshotInfo, SnapshotOp};
