//! # nasvisor storage
//!
//! Pools (directories on a NAS volume), qcow2 volumes and their internal
//! snapshots, linked and full clones, and import of raw, qcow2, vmdk and vdi
//! images, all through `qemu-img`. Names are checked so that no path escapes
//! its pool, and every operation is all-or-nothing.

pub mod error;
pub mod images;
pub mod name;
pub mod pool;
pub mod qemu_img;
pub mod seed;

pub use error::StorageError;
pub use images::{fetch_url, Image, ImageLibrary, ImageSpec};
pub use pool::{Pool, PoolUsage, VolumeInfo};
pub use qemu_img::{ImageInfo, QemuImg, SnapshotInfo, SnapshotOp};
