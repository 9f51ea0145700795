//! Files and directories that hold guest data or secrets: files are created
//! 0600 and directories 0700 from the start (no window in which another
//! user could open them), and the modes of what an older release left are
//! tightened.

use crate::error::StorageError;
use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a private file.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a private directory.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700; an existing `dir` is
/// set to 0700 (its parents are left alone).
pub fn create_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| StorageError::io(dir, e))?;
    set_mode(dir, DIR_MODE)
}

/// Creates a new file (it must not exist) with mode 0600.
pub fn create_file(path: &Path) -> Result<std::fs::File, StorageError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| StorageError::io(path, e))
}

/// Sets the mode of `path` (following no symlink: a symlink is left alone).
pub fn set_mode(path: &Path, mode: u32) -> Result<(), StorageError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| StorageError::io(path, e))?;
    if meta.file_type().is_symlink() || meta.permissions().mode() & 0o7777 == mode {
        return Ok(());
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| StorageError::io(path, e))
}

/// Tightens a tree: `dir` and every directory under it to 0700, every
/// regular file to 0600 (no more than that: a file already stricter keeps
/// its mode). Symlinks, sockets and other special files are left alone and
/// not followed, and so is a directory of another file system mounted in
/// the tree (a firmware slot mounted read-only by an install that a crash
/// cut short, a pool on its own disk): what is mounted there is not the
/// tree's to change. Returns how many modes changed.
pub fn tighten_tree(dir: &Path) -> Result<usize, StorageError> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(dir)
        .map_err(|e| StorageError::io(dir, e))?
        .dev();
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        changed += tighten(&d, DIR_MODE)?;
        for e in std::fs::read_dir(&d).map_err(|e| StorageError::io(&d, e))? {
            let e = e.map_err(|e| StorageError::io(&d, e))?;
            let t = e
                .file_type()
                .map_err(|err| StorageError::io(e.path(), err))?;
            if t.is_dir() {
                let other_fs = std::fs::symlink_metadata(e.path())
                    .map(|m| m.dev() != dev)
                    .unwrap_or(false);
                if other_fs {
                    tracing::debug!(dir = %e.path().display(), "another file system mounted here; its modes are left alone");
                    continue;
                }
                stack.push(e.path());
            } else if t.is_file() {
                changed += tighten(&e.path(), FILE_MODE)?;
            }
        }
    }
    Ok(changed)
}

/// Clears the bits of `path`'s mode that `max` does not allow (a symlink
/// is left alone); 1 if it changed.
pub fn tighten(path: &Path, max: u32) -> Result<usize, StorageError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| StorageError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() || mode & !max == 0 {
        return Ok(0);
    }
    match std::fs::set_permissions(path, Permissions::from_mode(mode & max)) {
        Ok(()) => Ok(1),
        // Gone meanwhile (a temporary file).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_tree_left_open_is_tightened_and_symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("shared.txt");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(d.path(), Permissions::from_mode(0o755)).unwrap();
        let sub = d.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::set_permissions(&sub, Permissions::from_mode(0o750)).unwrap();
        std::fs::set_permissions(d.path().join("a"), Permissions::from_mode(0o755)).unwrap();
        let f = sub.join("secret");
        std::fs::write(&f, b"hash").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o664)).unwrap();
        let strict = sub.join("strict");
        std::fs::write(&strict, b"k").unwrap();
        std::fs::set_permissions(&strict, Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::symlink(&target, sub.join("link")).unwrap();

        assert_eq!(tighten_tree(d.path()).unwrap(), 4);
        assert_eq!(mode(d.path()), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&strict), 0o400);
        assert_eq!(mode(&target), 0o644, "a symlink's target is not touched");
        assert_eq!(tighten_tree(d.path()).unwrap(), 0);
    }

    /// A read-only file system mounted in the tree (a slot an install
    /// left mounted when nasvisord was killed) is not walked into: the
    /// daemon still starts. Needs root to mount (the suite runs as root).
    #[test]
    fn a_file_system_mounted_in_the_tree_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let mnt = d.path().join("firmware/.slot.x/root");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::set_permissions(d.path(), Permissions::from_mode(0o755)).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "ro,mode=0755",
                "nasvisor-test",
                mnt.to_str().unwrap(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs (the tests run as root)");
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _u = Unmount(mnt.clone());
        tighten_tree(d.path()).expect("the tree is tightened around the mount");
        assert_eq!(mode(d.path()), 0o700);
        assert_eq!(mode(&mnt), 0o755, "the mounted root is not touched");
    }

    #[test]
    fn private_files_and_directories_are_created_with_their_mode() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("x/y");
        create_dir(&dir).unwrap();
        create_file(&dir.join("f")).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("f")), 0o600);
        assert!(create_file(&dir.join("f")).is_err(), "never reuses a file");
    }
}
